//! Cluster mode against two real ClickHouse servers forming a two-shard cluster: data
//! spreads over both shards by trace, every node answers alike, retention and migrations
//! act on every node, and an acknowledged append is on the shards.

use std::collections::BTreeMap;
use std::sync::Arc;

use spindle_clickhouse::{ClickHouseOptions, ClickHouseStore, MIGRATIONS};
use spindle_model::{dependency_edges, links_from_edges, KeyValue, Resource, Span, SpanId, SpanKind, TraceId};
use spindle_store::{TraceQuery, TraceStore};
use spindle_test_support::ClickHouse;

const CLUSTER: &str = "spindle_shards";
const DAY: u64 = 86_400_000_000_000;
const DAY0: u64 = 20_400 * DAY;

fn urls(nodes: &[ClickHouse]) -> Vec<String> {
    nodes.iter().map(|n| n.http_url.clone()).collect()
}

fn open_via(nodes: &[ClickHouse], via: usize, database: &str) -> Result<ClickHouseStore, spindle_store::StoreError> {
    ClickHouseStore::open(ClickHouseOptions::new(&nodes[via].http_url, database).with_cluster(CLUSTER, urls(nodes)))
}

/// A statement straight to one node, bypassing the store: what that node holds itself.
fn query(node: &ClickHouse, sql: &str) -> String {
    let response =
        reqwest::blocking::Client::new().post(&node.http_url).body(sql.to_string()).send().expect("query ClickHouse");
    let status = response.status();
    let body = response.text().expect("answer");
    assert!(status.is_success(), "{sql}: {status} {body}");
    body.trim().to_string()
}

fn count(node: &ClickHouse, sql: &str) -> u64 {
    query(node, sql).parse().unwrap_or_else(|_| panic!("{sql} answered no number"))
}

fn span(trace: u128, id: u64, parent: u64, service: &str, kind: SpanKind, start: u64) -> Span {
    Span {
        trace_id: TraceId(trace),
        span_id: SpanId(id),
        parent_span_id: SpanId(parent),
        name: format!("op-{}", id % 3).into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000 * id,
        attributes: vec![KeyValue::string("peer", service)],
        resource: Arc::new(Resource {
            attributes: vec![KeyValue::string("service.name", service)],
            dropped_attributes_count: 0,
        }),
        ..Default::default()
    }
}

/// Traces of three spans across services (edges for dependencies); the first ten start on
/// `DAY0`, the rest on the next day.
fn traces(n: u128) -> BTreeMap<TraceId, Vec<Span>> {
    let services = ["api", "orders", "db"];
    (1..=n)
        .map(|t| {
            let start = if t <= 10 { DAY0 } else { DAY0 + DAY } + t as u64 * 1_000_000;
            let base = t as u64 * 10;
            let (a, b) = (services[t as usize % 3], services[(t as usize + 1) % 3]);
            let spans = vec![
                span(t, base + 1, 0, a, SpanKind::Server, start),
                span(t, base + 2, base + 1, a, SpanKind::Client, start + 10),
                span(t, base + 3, base + 2, b, SpanKind::Server, start + 20),
            ];
            (TraceId(t), spans)
        })
        .collect()
}

fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.span_id);
    spans
}

#[test]
fn a_two_shard_cluster_spreads_traces_and_answers_alike_through_every_node() {
    let mut nodes = ClickHouse::start_cluster(2, CLUSTER);
    let db = "cluster";
    let a = open_via(&nodes, 0, db).expect("open through node A");
    // B gives `peer` dedicated columns (on the local and the Distributed tables) and reads
    // through them; A, opened before, reads the attribute arrays: both answer alike.
    let b = ClickHouseStore::open(ClickHouseOptions {
        hot_attributes: vec!["peer".into()],
        ..ClickHouseOptions::new(&nodes[1].http_url, db).with_cluster(CLUSTER, urls(&nodes))
    })
    .expect("open through node B");
    assert!(a.hot_attributes().is_empty());
    assert_eq!(b.hot_attributes().iter().collect::<Vec<_>>(), ["peer"]);
    assert_eq!(a.server_version().major, 18, "the tests run on Debian's ClickHouse 18.16");

    let all = traces(60);
    let spans: Vec<Span> = all.values().flatten().cloned().collect();
    let (first, second) = spans.split_at(spans.len() / 2);
    a.append(first.to_vec()).unwrap();
    a.append(second.to_vec()).unwrap();

    // Right after the acknowledged appends (synchronous Distributed inserts), both shards
    // hold rows, together all of them, and each trace lives whole on one shard.
    let local = |node: &ClickHouse, table: &str| count(node, &format!("SELECT count() FROM {db}.{table}_local"));
    let per_node: Vec<u64> = nodes.iter().map(|n| local(n, "spans")).collect();
    assert!(per_node.iter().all(|&c| c > 0), "spans per shard: {per_node:?}");
    assert_eq!(per_node.iter().sum::<u64>(), spans.len() as u64);
    let traces_per_node: Vec<u64> =
        nodes.iter().map(|n| count(n, &format!("SELECT uniqExact(trace_id) FROM {db}.spans_local"))).collect();
    assert_eq!(traces_per_node.iter().sum::<u64>(), all.len() as u64, "a trace is never split: {traces_per_node:?}");
    let index_per_node: Vec<u64> = nodes.iter().map(|n| local(n, "trace_id_ts")).collect();
    assert_eq!(index_per_node, traces_per_node, "index rows sit beside their trace's spans (one batch per trace)");
    assert_eq!(a.stored_span_rows().unwrap(), spans.len() as u64);
    assert!(nodes.iter().all(|n| local(n, "operations") > 0), "operations spread by service");

    // Every trace reads whole through either node.
    for (id, want) in &all {
        assert_eq!(sorted(a.get_trace(*id).unwrap()), *want, "trace {id:?} through A");
        assert_eq!(sorted(b.get_trace(*id).unwrap()), *want, "trace {id:?} through B");
    }
    // Searches, catalog and dependencies agree through both nodes, and with the data.
    let queries = [
        TraceQuery::default(),
        TraceQuery { limit: 100, ..TraceQuery::default() },
        TraceQuery { service: Some("orders".into()), limit: 100, ..TraceQuery::default() },
        TraceQuery { attributes: vec![("peer".into(), "db".into())], limit: 7, ..TraceQuery::default() },
        TraceQuery { start_time_min_unix_nano: DAY0 + DAY, limit: 100, ..TraceQuery::default() },
    ];
    for q in &queries {
        let found = a.find_trace_ids(q).unwrap();
        assert!(!found.is_empty(), "{q:?}");
        assert_eq!(found, b.find_trace_ids(q).unwrap(), "{q:?}");
    }
    let red = |store: &ClickHouseStore, key: &str| {
        let mut buckets = Vec::new();
        let window = TraceQuery { limit: usize::MAX, ..TraceQuery::default() };
        let computed =
            store.red_buckets(&window, Some(key), 3_600_000_000_000, &mut |b| buckets.push(format!("{b:?}"))).unwrap();
        assert!(computed);
        buckets.sort();
        buckets
    };
    for key in ["peer", "service"] {
        let buckets = red(&a, key);
        assert!(!buckets.is_empty());
        assert_eq!(buckets, red(&b, key), "RED buckets by {key}");
    }
    let newest: Vec<TraceId> = (41..=60).rev().map(TraceId).collect();
    assert_eq!(
        a.find_trace_ids(&TraceQuery { limit: 20, ..TraceQuery::default() }).unwrap(),
        newest,
        "newest first, limit applied across shards"
    );
    assert_eq!(a.services().unwrap(), vec!["api", "db", "orders"]);
    assert_eq!(a.services().unwrap(), b.services().unwrap());
    for service in ["api", "db", "orders"] {
        assert_eq!(a.operations(service, None).unwrap(), b.operations(service, None).unwrap());
    }
    let mut edges = BTreeMap::new();
    for spans in all.values() {
        dependency_edges(spans, &mut edges);
    }
    let want = links_from_edges(edges);
    assert!(!want.is_empty());
    assert_eq!(a.dependencies(0, u64::MAX).unwrap(), want);
    assert_eq!(b.dependencies(0, u64::MAX).unwrap(), want);

    // Retention: 18.16 has no TTL, so partitions go by hand, on both nodes.
    assert!(!a.set_retention(Some(3)).unwrap(), "no TTL on 18.16");
    let before: Vec<u64> = nodes.iter().map(|n| local(n, "spans")).collect();
    let dropped = a.drop_days_before(DAY0 + DAY).unwrap();
    let after: Vec<u64> = nodes.iter().map(|n| local(n, "spans")).collect();
    assert_eq!(after.iter().sum::<u64>(), 50 * 3, "the ten traces of DAY0 went");
    assert!(before.iter().zip(&after).all(|(b, a)| a < b), "both shards lost DAY0: {before:?} → {after:?}");
    assert_eq!(dropped, 4, "DAY0 of spans_local and trace_id_ts_local on each node");
    for t in 1..=10 {
        assert!(a.get_trace(TraceId(t)).unwrap().is_empty() && b.get_trace(TraceId(t)).unwrap().is_empty());
    }
    assert_eq!(sorted(b.get_trace(TraceId(11)).unwrap()), all[&TraceId(11)]);
    assert_eq!(a.drop_days_before(DAY0 + DAY).unwrap(), 0);

    // Reopening runs no migration again; each node keeps its own record.
    drop((a, b));
    let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.0).collect();
    for via in [0, 1] {
        let store = open_via(&nodes, via, db).expect("reopen");
        for (_, applied) in store.applied_migrations_by_node().unwrap() {
            assert_eq!(applied, versions);
        }
    }
    for node in &nodes {
        assert_eq!(count(node, &format!("SELECT count() FROM {db}.schema_migrations")), versions.len() as u64);
        assert_eq!(
            query(node, &format!("SELECT engine FROM system.tables WHERE database = '{db}' AND name = 'spans'")),
            "Distributed"
        );
    }

    // An append is acknowledged only once it is on the shards: with node B down, an append
    // of traces that shard to B fails instead of being queued on A.
    let a = open_via(&nodes, 0, db).unwrap();
    nodes[1].stop();
    let late: Vec<Span> = traces(80).into_iter().filter(|(id, _)| id.0 > 60).flat_map(|(_, s)| s).collect();
    assert!(a.append(late.clone()).is_err(), "an append reaching a stopped shard must fail");
    nodes[1].restart();
    a.append(late.clone()).unwrap();
    let b = open_via(&nodes, 1, db).unwrap();
    for t in 61..=80 {
        let want: Vec<Span> = late.iter().filter(|s| s.trace_id == TraceId(t)).cloned().collect();
        assert_eq!(sorted(b.get_trace(TraceId(t)).unwrap()), want, "trace {t} after the retry");
    }
}

#[test]
fn cluster_options_are_checked_at_open() {
    let nodes = ClickHouse::start_cluster(2, CLUSTER);
    let with = |name: &str, shards: Vec<String>| {
        ClickHouseStore::open(ClickHouseOptions::new(&nodes[0].http_url, "checked").with_cluster(name, shards))
    };
    // Cluster names go into SQL: validated like database names.
    assert!(with("x; DROP", urls(&nodes)).is_err());
    assert!(with("", urls(&nodes)).is_err());
    assert!(with(CLUSTER, Vec::new()).is_err());
    let err = with("nowhere", urls(&nodes)).err().expect("an unknown cluster is refused");
    assert!(err.to_string().contains("nowhere"), "{err}");

    // A database keeps the mode it was created in.
    open_via(&nodes, 0, "clustered").expect("cluster mode");
    let err = ClickHouseStore::open(ClickHouseOptions::new(&nodes[0].http_url, "clustered")).err();
    assert!(err.is_some_and(|e| e.to_string().contains("Distributed")), "single mode on a cluster database");
    ClickHouseStore::open(ClickHouseOptions::new(&nodes[1].http_url, "single")).expect("single mode");
    let err = open_via(&nodes, 1, "single").err();
    assert!(err.is_some_and(|e| e.to_string().contains("cluster mode")), "cluster mode on a single database");
}
