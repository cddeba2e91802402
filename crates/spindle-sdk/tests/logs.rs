//! Log lines of a service set up with `init()`, as text and as JSON: the event's level,
//! target, message and fields, with the scope of spans around it and their fields. Each
//! format runs in a child process (this test binary again), since `init` installs the
//! process's one global subscriber and the lines go to standard output.

use std::process::Command;

use spindle_sdk::LogFormat;

const CHILD: &str = "SPINDLE_SDK_LOGS_CHILD";

/// What the child logs: an event in two nested spans, one filtered out by level, one
/// outside any span.
fn child(format: LogFormat) {
    let guard = spindle_sdk::builder("logs-test")
        // Nothing listens there: exports fail, which costs the service nothing.
        .endpoint("http://127.0.0.1:9")
        .log_format(format)
        .log_filter("info")
        .init();
    let outer = tracing::info_span!("outer", symbol = "AAPL", n = 3_i64);
    outer.in_scope(|| {
        tracing::info_span!("inner", step = 1_i64).in_scope(|| {
            tracing::info!(price = 1.5, "priced \"fast\"");
            tracing::debug!("not logged at info");
        });
    });
    tracing::warn!(reason = "late", "outside any span");
    drop(outer);
    drop(guard);
}

fn lines_of(format: &str) -> Vec<String> {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "log_lines_as_text_and_json", "--nocapture", "--test-threads=1"])
        .env(CHILD, format)
        .env_remove("RUST_LOG")
        .output()
        .expect("child runs");
    assert!(output.status.success(), "child failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        // The harness's own lines, and the SDK's lines about itself.
        .filter(|l| l.contains("priced") || l.contains("outside any span") || l.contains("not logged"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn log_lines_as_text_and_json() {
    if let Ok(format) = std::env::var(CHILD) {
        child(if format == "json" { LogFormat::Json } else { LogFormat::Text });
        return;
    }

    let text = lines_of("text");
    assert_eq!(text.len(), 2, "{text:#?}");
    let (timestamp, rest) = text[0].split_once(' ').expect("timestamp first");
    assert!(timestamp.ends_with('Z') && timestamp.contains('T'), "{timestamp}");
    assert_eq!(rest, r#" INFO outer{symbol="AAPL" n=3}:inner{step=1}: logs: priced "fast" price=1.5"#, "{text:#?}");
    assert!(text[1].ends_with(r#" WARN logs: outside any span reason="late""#), "{text:#?}");

    let json = lines_of("json");
    assert_eq!(json.len(), 2, "{json:#?}");
    let line: serde_json::Value = serde_json::from_str(&json[0]).expect("a JSON object per line");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "logs");
    assert_eq!(line["fields"]["message"], "priced \"fast\"");
    assert_eq!(line["fields"]["price"], 1.5);
    assert_eq!(line["span"]["name"], "inner");
    assert_eq!(line["span"]["step"], 1);
    assert_eq!(line["spans"][0]["name"], "outer");
    assert_eq!(line["spans"][0]["symbol"], "AAPL");
    assert_eq!(line["spans"][0]["n"], 3);
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    let warn: serde_json::Value = serde_json::from_str(&json[1]).expect("a JSON object per line");
    assert_eq!(warn["fields"]["reason"], "late");
    assert!(warn.get("span").is_none(), "no span around it: {warn}");
}
