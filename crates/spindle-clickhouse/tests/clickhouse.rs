//! What only the ClickHouse store has to show: its migrations, at-least-once appends,
//! answers for what it never stored, and spans of every shape read back exactly from this
//! release's blobs and from those earlier releases wrote, against a real ClickHouse server.

use std::sync::Arc;

use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore, MIGRATIONS};
use spindle_model::{
    AttributeValue, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};
use spindle_store::{RowFields, SpanRow, TraceQuery, TraceStore};
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
    // Migrations whose record was lost (a crash between a statement and its record) run
    // again over what they made, an added column included.
    drop(store);
    let dropped = reqwest::blocking::Client::new()
        .post(&server.http_url)
        .body("DROP TABLE migrations.schema_migrations")
        .send()
        .expect("query ClickHouse");
    assert!(dropped.status().is_success());
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

    // Credentials: a user with a password reads and writes; a wrong password is refused
    // with ClickHouse's reason, before anything is created.
    let as_user = |password: &str| ClickHouseOptions {
        credentials: Some((ClickHouse::USER.to_string(), password.to_string())),
        ..ClickHouseOptions::new(&server.http_url, "with_user")
    };
    let err = ClickHouseStore::open(as_user("wrong")).err().expect("a wrong password is refused");
    assert!(err.to_string().contains("Authentication failed") || err.to_string().contains("password"), "{err}");
    let store = ClickHouseStore::open(as_user(ClickHouse::PASSWORD)).unwrap();
    store.append(trace.clone()).unwrap();
    assert_eq!(store.get_trace(TraceId(7)).unwrap().len(), 2);
}

/// Spans of every shape the typed columns alone cannot give back: attributes in mixed
/// order with bytes, arrays, maps and a key twice; an end before the start; events, links,
/// trace state, flags, dropped counts; a resource with non-string attributes and a scope.
fn odd_spans() -> Vec<Span> {
    let resource = Arc::new(Resource {
        attributes: vec![
            KeyValue::string("service.name", "api"),
            KeyValue::new("shard", AttributeValue::Int(3)),
            KeyValue::string("region", "eu"),
            KeyValue::new("labels", AttributeValue::Map(vec![KeyValue::string("a", "b")])),
        ],
        dropped_attributes_count: 2,
    });
    let scope = Arc::new(Scope {
        name: "lib".into(),
        version: "1.2".into(),
        attributes: vec![KeyValue::new("x", AttributeValue::Bool(false))],
        dropped_attributes_count: 1,
    });
    let start = 1_765_000_000_000_000_000;
    (0..12u64)
        .map(|i| {
            let mut s = span(u128::from(i % 3) + 20, i + 100, start + i * 1_000);
            s.parent_span_id = SpanId(if i < 3 { 0 } else { 100 + i % 3 });
            s.kind = SpanKind::from_otlp((i % 6) as i32);
            s.attributes = vec![
                KeyValue::new("region", AttributeValue::Array(vec![AttributeValue::String("x".into())])),
                KeyValue::new("n", AttributeValue::Int(i as i64 - 5)),
                KeyValue::string("symbol", format!("S{i}")),
                KeyValue::new("n", AttributeValue::Double(0.25)),
                KeyValue::new("flag", AttributeValue::Bool(i % 2 == 0)),
                KeyValue::new("empty", AttributeValue::Map(Vec::new())),
                KeyValue::string("symbol", "second"),
            ];
            s.attributes.truncate(1 + (i as usize % 7));
            if i % 4 == 1 {
                s.end_time_unix_nano = s.start_time_unix_nano - 7;
            }
            if i % 3 == 0 {
                s.trace_state = "vendor=1".into();
                s.flags = 1;
                s.dropped_attributes_count = 4;
                s.dropped_events_count = 5;
                s.dropped_links_count = 6;
                s.events = vec![Event {
                    time_unix_nano: s.start_time_unix_nano,
                    name: "retry".into(),
                    attributes: vec![KeyValue::string("attempt", "2")],
                    dropped_attributes_count: 0,
                }];
                s.links = vec![Link { trace_id: TraceId(1), span_id: SpanId(2), ..Default::default() }];
                s.status = Status { code: StatusCode::Error, message: "boom".into() };
            }
            if i % 2 == 0 {
                s.resource = Arc::clone(&resource);
                s.scope = Arc::clone(&scope);
            }
            s
        })
        .collect()
}

/// A blob as releases before version 2 wrote it: version byte 1, then the whole span.
fn v1_blob(span: &Span) -> Vec<u8> {
    let mut blob = vec![1];
    blob.extend(postcard::to_stdvec(span).expect("postcard"));
    blob
}

fn sql(server: &ClickHouse, query: &str) -> String {
    let response =
        reqwest::blocking::Client::new().post(&server.http_url).body(query.to_string()).send().expect("query");
    let status = response.status();
    let body = response.text().expect("answer");
    assert!(status.is_success(), "{query}: {status} {body}");
    body
}

/// Every read the store has, against the spans themselves.
fn assert_reads_back(store: &ClickHouseStore, spans: &[Span], what: &str) {
    let mut traces: std::collections::BTreeMap<TraceId, Vec<Span>> = Default::default();
    for s in spans {
        traces.entry(s.trace_id).or_default().push(s.clone());
    }
    for (id, want) in &traces {
        let mut got = store.get_trace(*id).unwrap();
        got.sort_by_key(|s| s.span_id);
        assert_eq!(&got, want, "{what}: trace {id:?}");
    }
    let mut got = Vec::new();
    store.scan_spans(&TraceQuery::default(), &mut |s| got.push(s.clone())).unwrap();
    got.sort_by_key(|s| s.span_id);
    assert_eq!(got, spans, "{what}: scan_spans");
    for (key, value) in [("region", "eu"), ("n", "-3"), ("shard", "3"), ("attempt", "2"), ("symbol", "second")] {
        let q = TraceQuery { attributes: vec![(key.into(), value.into())], ..TraceQuery::default() };
        let want: std::collections::BTreeSet<TraceId> =
            spans.iter().filter(|s| q.matches_span(s)).map(|s| s.trace_id).collect();
        let got: std::collections::BTreeSet<TraceId> = store.find_trace_ids(&q).unwrap().into_iter().collect();
        assert_eq!(got, want, "{what}: search {key}={value}");
    }
    for key in ["region", "n", "symbol", "flag", "empty", "shard", "labels", "service.name", "attempt", "x"] {
        let fields = RowFields { group_by: Some(key.into()), ids: true, operation: true, trace_only: false };
        let mut got: Vec<(SpanId, u64, Option<String>)> = Vec::new();
        store
            .scan_rows(&TraceQuery::default(), &fields, &mut |r| {
                got.push((r.span_id, r.duration_nanos, r.group.as_ref().map(|g| g.to_string())))
            })
            .unwrap();
        got.sort();
        let want: Vec<(SpanId, u64, Option<String>)> = spans
            .iter()
            .map(|s| {
                let r = SpanRow::of(s, &fields);
                (r.span_id, r.duration_nanos, r.group.as_ref().map(|g| g.to_string()))
            })
            .collect();
        assert_eq!(got, want, "{what}: rows grouped by {key}");
    }
}

#[test]
fn spans_of_every_shape_read_back_exactly_from_old_and_new_blobs() {
    let server = ClickHouse::start();
    let spans = odd_spans();

    // This release's blobs.
    let current = open(&server, "current");
    current.append(spans.clone()).unwrap();
    assert_reads_back(&current, &spans, "version 2");
    let versions = sql(&server, "SELECT DISTINCT hex(substring(span, 1, 1)) FROM current.spans");
    assert_eq!(versions.trim(), "02", "appends write version 2");

    // A database an earlier release wrote: the same columns, whole spans in version-1
    // blobs. Rows are copied server-side with the blob replaced.
    let legacy = open(&server, "legacy");
    let columns = "day, start_ns, trace_id, span_id, parent_span_id, service, name, kind, duration_ns, \
                   status_code, str_keys, str_values, int_keys, int_values, bool_keys, bool_values, double_keys, \
                   double_values, resource_keys, resource_values";
    let (old, new) = spans.split_at(8);
    for s in old {
        let hex: String = v1_blob(s).iter().map(|b| format!("{b:02X}")).collect();
        sql(
            &server,
            &format!(
                "INSERT INTO legacy.spans ({columns}, span) SELECT {columns}, unhex('{hex}') FROM current.spans \
                 WHERE span_id = {}",
                s.span_id.0
            ),
        );
    }
    sql(&server, "INSERT INTO legacy.trace_id_ts SELECT * FROM current.trace_id_ts");
    sql(&server, "INSERT INTO legacy.operations SELECT * FROM current.operations");
    let versions = sql(&server, "SELECT hex(substring(span, 1, 1)) AS v, count() FROM legacy.spans GROUP BY v");
    assert_eq!(versions.trim(), "01\t8");
    assert_reads_back(&legacy, old, "version 1");

    // Then this release appends to it: both versions in one database, one trace mixing them.
    legacy.append(new.to_vec()).unwrap();
    assert_reads_back(&legacy, &spans, "versions 1 and 2");
}
