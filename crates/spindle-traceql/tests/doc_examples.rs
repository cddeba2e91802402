//! Every example query in Tempo's TraceQL documentation parses (doc_examples.txt lists them
//! with the document each comes from); the two the documentation calls invalid do not.

use spindle_traceql::parse;

const EXAMPLES: &str = include_str!("doc_examples.txt");

#[test]
fn every_documented_example_parses() {
    let mut failures = Vec::new();
    let mut count = 0;
    for line in EXAMPLES.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        count += 1;
        if let Err(e) = parse(line) {
            failures.push(format!("{line}\n    {e}"));
        }
    }
    assert!(count > 100, "the examples file holds {count} queries");
    assert!(failures.is_empty(), "{} of {count} examples fail to parse:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_documented_invalid_queries_are_refused() {
    let invalid: Vec<&str> = EXAMPLES
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# INVALID"))
        .map(|l| l.trim_start_matches([':', ' ']))
        .collect();
    assert!(!invalid.is_empty());
    for query in invalid {
        let query = query.trim();
        assert!(parse(query).is_err(), "{query} parsed");
    }
}
