//! Every protocol's receiver, fed bytes captured from real client libraries
//! (`crates/spindle-codec/tests/fixtures`), read back through the query API; malformed
//! input on every port; remote sampling from a strategies file that changes.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{assert_arrived, fixture, Spindle};
use serde_json::Value;

fn post(url: String, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::blocking::Client::new().post(url).header("content-type", content_type).body(body).send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

#[test]
fn bytes_from_real_clients_arrive_through_every_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start(dir.path());
    for (name, decoded) in common::send_client_fixtures(&spindle) {
        assert_arrived(&spindle, &decoded, name);
    }

    // UDP counters tell what arrived.
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap();
    assert!(
        metrics.contains("spindle_udp_datagrams_total{protocol=\"jaeger_thrift_compact_udp\",outcome=\"received\"} 2"),
        "{metrics}"
    );
}

#[test]
fn malformed_input_on_every_port_is_answered_or_counted_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start(dir.path());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = fixture("jaeger_compact_py_jaeger_client.bin");
    for garbage in [vec![], vec![0xff; 100], good[..good.len() / 2].to_vec(), vec![0x82, 0x81, 0x01, 0x09]] {
        udp.send_to(&garbage, spindle.jaeger_compact).unwrap();
        udp.send_to(&garbage, spindle.jaeger_binary).unwrap();
    }
    // Deep nesting: a struct field opening a struct, a thousand times.
    let mut deep = vec![0x82, 0x81, 0x01, 0x09];
    deep.extend(b"emitBatch");
    deep.extend(std::iter::repeat_n(0x1c, 5000));
    udp.send_to(&deep, spindle.jaeger_compact).unwrap();

    let thrift = fixture("jaeger_binary_http_otel_python.bin");
    let jaeger = format!("http://{}/api/traces", spindle.jaeger_http);
    let (status, body) = post(jaeger.clone(), "application/json", thrift.clone());
    assert_eq!(status, 400);
    assert!(body.contains("Unsupported content type"), "{body}");
    let (status, body) = post(jaeger.clone(), "application/x-thrift", thrift[..thrift.len() - 7].to_vec());
    assert_eq!(status, 400);
    assert!(!body.is_empty());
    // Too large: refused from its Content-Length, before the body is sent (a client still
    // writing 20 MB when the 413 arrives may see a broken pipe instead of the answer).
    let mut conn = std::net::TcpStream::connect(spindle.jaeger_http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(conn, "POST /api/traces HTTP/1.1\r\nHost: spindle\r\nContent-Type: application/x-thrift\r\nContent-Length: 20000000\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    drop((conn, jaeger));

    let zipkin = format!("http://{}/api/v2/spans", spindle.zipkin);
    for (ct, body) in [
        ("application/json", b"{not json".to_vec()),
        ("application/json", b"[{\"traceId\":\"xyz\",\"id\":\"1\"}]".to_vec()),
        ("application/x-protobuf", vec![0xff; 40]),
    ] {
        let (status, reason) = post(zipkin.clone(), ct, body);
        assert_eq!(status, 400, "{ct}");
        assert!(!reason.is_empty());
    }
    let (status, _) = post(zipkin, "application/xml", b"<spans/>".to_vec());
    assert_eq!(status, 415);

    // The UDP garbage was counted as rejected; the server is still up and good input works.
    std::thread::sleep(Duration::from_millis(500));
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap();
    let rejected: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("spindle_udp_datagrams_total") && l.contains("outcome=\"rejected\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(rejected, 9, "{metrics}");
    assert!(spindle.is_running());
    udp.send_to(&good, spindle.jaeger_compact).unwrap();
    assert_arrived(&spindle, &spindle_codec::jaeger_thrift::decode_emit_batch_compact(&good).unwrap(), "good datagram");
}

#[test]
fn remote_sampling_serves_the_strategies_file_and_follows_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let strategies = dir.path().join("strategies.json");
    std::fs::write(
        &strategies,
        r#"{"default_strategy": {"type": "probabilistic", "param": 0.5},
            "service_strategies": [
              {"service": "foo", "type": "probabilistic", "param": 0.8,
               "operation_strategies": [{"operation": "op1", "type": "probabilistic", "param": 0.2}]},
              {"service": "bar", "type": "ratelimiting", "param": 5}]}"#,
    )
    .unwrap();
    let spindle =
        Spindle::start_with(&dir.path().join("data"), &["--sampling-strategies", strategies.to_str().unwrap()]);
    let get = |url: String| {
        let r = reqwest::blocking::get(url).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, bar) = get(format!("http://{}/sampling?service=bar", spindle.sampling));
    assert_eq!(status, 200);
    let bar: Value = serde_json::from_str(&bar).unwrap();
    assert_eq!(bar["strategyType"], "RATE_LIMITING");
    assert_eq!(bar["rateLimitingSampling"]["maxTracesPerSecond"], 5);
    let (_, foo) = get(format!("http://{}/api/sampling?service=foo", spindle.jaeger_http));
    let foo: Value = serde_json::from_str(&foo).unwrap();
    assert_eq!(foo["strategyType"], "PROBABILISTIC");
    let ops = &foo["operationSampling"]["perOperationStrategies"];
    assert_eq!(ops[0]["operation"], "op1");
    assert_eq!(ops[0]["probabilisticSampling"]["samplingRate"], 0.2);
    let (_, other) = get(format!("http://{}/?service=unknown", spindle.sampling));
    let other: Value = serde_json::from_str(&other).unwrap();
    assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.5);
    let (status, msg) = get(format!("http://{}/sampling", spindle.sampling));
    assert_eq!((status, msg.trim()), (400, "'service' parameter must be provided once"));
    let (status, _) = get(format!("http://{}/sampling?service=a&service=b", spindle.sampling));
    assert_eq!(status, 400);

    // Change the file: the new strategy is served within a few seconds.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &strategies,
        r#"{"service_strategies": [{"service": "bar", "type": "probabilistic", "param": 0.1}]}"#,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, bar) = get(format!("http://{}/sampling?service=bar", spindle.sampling));
        let bar: Value = serde_json::from_str(&bar).unwrap();
        if bar["strategyType"] == "PROBABILISTIC" {
            assert_eq!(bar["probabilisticSampling"]["samplingRate"], 0.1);
            break;
        }
        assert!(Instant::now() < deadline, "strategies not reloaded: {bar}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The OTLP gRPC receiver offers large HTTP/2 frames, so an export (often 100 KB and more)
/// arrives in one DATA frame instead of one per 16 KiB, each its own write and wake.
#[test]
fn otlp_grpc_advertises_one_mebibyte_frames() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start(dir.path());
    let mut conn = std::net::TcpStream::connect(spindle.grpc).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The client preface, then an empty SETTINGS frame.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    // The server's first frame is its SETTINGS: a 9-byte header, then 6-byte parameters.
    let mut head = [0u8; 9];
    conn.read_exact(&mut head).unwrap();
    assert_eq!((head[3], head[4] & 1), (0x4, 0), "a SETTINGS frame, not an acknowledgement: {head:?}");
    let mut payload = vec![0u8; usize::from(head[1]) << 8 | usize::from(head[2])];
    conn.read_exact(&mut payload).unwrap();
    let max_frame = payload
        .chunks_exact(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == 0x5)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    assert_eq!(max_frame, Some(1 << 20), "SETTINGS_MAX_FRAME_SIZE in {payload:?}");
}
