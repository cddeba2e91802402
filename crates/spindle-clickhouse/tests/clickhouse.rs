//! What only the ClickHouse store has to show: its migrations, at-least-once appends, and
//! answers for what it never stored, against a real ClickHouse server.

use std::sync::Arc;

use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore, MIGRATIONS};
use spindle_model::{AttributeValue, KeyValue, Resource, Span, SpanId, SpanKind, TraceId};
use spindle_store::{TraceQuery, TraceStore};
use spindle_test_support::ClickHouse;

fn open(server: &ClickHouse, database: &str) -> ClickHouseStore {
    ClickHouseStore::open(ClickHouseOptions::new(&server.http_url, database)).expect("open store")
}

fn span(trace: u128, id: u64, start: u64) -> Span {
    Span {
        trace_id: TraceId(trace),
        span_id: SpanId(id),
        name: "get".into(),
        kind: SpanKind::Server,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        attributes: vec![
            KeyValue::string("symbol", "it's \\ odd"),
            KeyValue::new("bytes", AttributeValue::Bytes(vec![0, 255, 39])),
        ],
        resource: Arc::new(Resource {
            attributes: vec![KeyValue::string("service.name", "api")],
            dropped_attributes_count: 0,
        }),
        ..Default::default()
    }
}

#[test]
fn clickhouse_specific_behaviour() {
    let server = ClickHouse::start();

    // Migrations run once and record every version; opening again changes nothing.
    let store = open(&server, "migrations");
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(store.applied_migrations().unwrap(), all);
    assert_eq!(store.server_version().major, 18, "the tests run on Debian's ClickHouse 18.16");
    let trace = vec![span(7, 1, 1_700_000_000_000_000_000), span(7, 2, 1_700_000_000_500_000_000)];
    store.append(trace.clone()).unwrap();
    drop(store);
    let store = open(&server, "migrations");
    assert_eq!(store.applied_migrations().unwrap(), all);
    let mut got = store.get_trace(TraceId(7)).unwrap();
    got.sort_by_key(|s| s.span_id);
    assert_eq!(got, trace, "spans come back exactly as appended, odd bytes included");

    // A batch appended twice is stored twice and read once.
    store.append(trace.clone()).unwrap();
    assert_eq!(store.stored_span_rows().unwrap(), 4);
    let mut got = store.get_trace(TraceId(7)).unwrap();
    got.sort_by_key(|s| s.span_id);
    assert_eq!(got, trace);
    assert_eq!(store.find_trace_ids(&TraceQuery::default()).unwrap(), vec![TraceId(7)]);
    let mut visited = 0;
    store.scan_spans(&TraceQuery::default(), &mut |_| visited += 1).unwrap();
    assert_eq!(visited, 2);
    let links = store.dependencies(0, u64::MAX).unwrap();
    assert!(links.is_empty(), "two server spans of one service make no edge: {links:?}");

    // Unknown ids and empty databases answer empty, not errors.
    assert!(store.get_trace(TraceId(8)).unwrap().is_empty());
    let empty = open(&server, "empty");
    assert!(empty.get_trace(TraceId(7)).unwrap().is_empty());
    assert!(empty.find_trace_ids(&TraceQuery::default()).unwrap().is_empty());
    assert!(empty.services().unwrap().is_empty());
    assert!(empty.dependencies(0, u64::MAX).unwrap().is_empty());

    // Attribute search with a quote and a backslash in the value reaches the right span.
    let q = TraceQuery { attributes: vec![("symbol".into(), "it's \\ odd".into())], ..TraceQuery::default() };
    assert_eq!(store.find_trace_ids(&q).unwrap(), vec![TraceId(7)]);

    // Retention drops whole days: a trace of an earlier day goes, one crossing into the
    // kept day stays readable by id with its later spans, and the newest stays whole.
    const DAY: u64 = 86_400_000_000_000;
    let store = open(&server, "retention");
    let day0 = 20_000 * DAY;
    let old = vec![span(1, 1, day0 + 5)];
    let crossing = vec![span(2, 2, day0 + 7), span(2, 3, day0 + DAY + 7)];
    let new = vec![span(3, 4, day0 + 2 * DAY)];
    for batch in [&old, &crossing, &new] {
        store.append(batch.to_vec()).unwrap();
    }
    assert_eq!(store.drop_days_before(day0 + DAY + 1).unwrap(), 2, "day0 of spans and trace_id_ts");
    assert!(store.get_trace(TraceId(1)).unwrap().is_empty());
    assert_eq!(store.get_trace(TraceId(2)).unwrap(), crossing[1..].to_vec());
    assert_eq!(store.get_trace(TraceId(3)).unwrap(), new);
    assert_eq!(store.find_trace_ids(&TraceQuery::default()).unwrap(), vec![TraceId(3), TraceId(2)]);
    assert_eq!(store.drop_days_before(day0 + DAY + 1).unwrap(), 0, "nothing left to drop");

    // Outside input never panics: a bad database name and an unreachable server are errors.
    assert!(ClickHouseStore::open(ClickHouseOptions::new(&server.http_url, "x; DROP")).is_err());
    let down = spindle_test_support::free_port();
    let err = ClickHouseStore::open(ClickHouseOptions::new(format!("http://127.0.0.1:{down}"), "x")).err().unwrap();
    assert!(err.to_string().contains("ClickHouse at"), "{err}");
}
