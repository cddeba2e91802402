//! Service-graph edges derived from the spans of one trace.
//!
//! Besides parent→child calls between services, peers that spans name but that send no
//! spans of their own become nodes: a Kafka cluster through `messaging.system` on
//! producer/consumer spans, a database through `db.system` on client spans, any other
//! peer through `peer.service` on a client span that has no child in another service.
//! That is what turns the seed pipeline into `ingestion → kafka → processor → kafka →
//! storage → postgresql` instead of a direct `ingestion → processor` edge.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::semconv;
use crate::span::{AttributeValue, Span, SpanKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

fn str_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attribute(key).and_then(AttributeValue::as_str).filter(|s| !s.is_empty())
}

fn messaging_system(span: &Span) -> Option<&str> {
    match span.kind {
        SpanKind::Producer | SpanKind::Consumer => str_attribute(span, semconv::MESSAGING_SYSTEM),
        _ => None,
    }
}

fn database_system(span: &Span) -> Option<&str> {
    if span.kind != SpanKind::Client {
        return None;
    }
    str_attribute(span, semconv::DB_SYSTEM).or_else(|| str_attribute(span, semconv::DB_SYSTEM_NAME))
}

/// Adds the edges of one trace to `into`, counting one call per edge occurrence.
pub fn dependency_edges<'a>(trace: impl IntoIterator<Item = &'a Span>, into: &mut BTreeMap<(String, String), u64>) {
    for_each_edge(trace, |parent, child, _| {
        *into.entry((parent.to_string(), child.to_string())).or_insert(0) += 1;
    });
}

/// How a messaging peer is named: by its system alone (`kafka`, as Jaeger's dependency
/// graph shows it) or one node per destination (`kafka/market-data-raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerNodes {
    PerSystem,
    PerDestination,
}

/// The node a messaging span points at: `system`, or `system/destination` per topic when
/// the span names one.
fn broker_node(span: &Span, system: &str, naming: BrokerNodes) -> String {
    match (naming, str_attribute(span, semconv::MESSAGING_DESTINATION_NAME)) {
        (BrokerNodes::PerDestination, Some(topic)) => format!("{system}/{topic}"),
        _ => system.to_string(),
    }
}

/// Calls `edge(parent, child, call)` for every edge occurrence of one trace, where `call`
/// is the span that stands for the call: the child span of a service-to-service call,
/// the client span of a database call, the producer or consumer span of a messaging hop.
/// A messaging peer is one node per system.
pub fn for_each_edge<'a>(trace: impl IntoIterator<Item = &'a Span>, edge: impl FnMut(&str, &str, &'a Span)) {
    for_each_edge_named(trace, BrokerNodes::PerSystem, edge)
}

/// [`for_each_edge`] with a choice of how messaging peers are named.
pub fn for_each_edge_named<'a>(
    trace: impl IntoIterator<Item = &'a Span>,
    naming: BrokerNodes,
    mut edge: impl FnMut(&str, &str, &'a Span),
) {
    let spans: Vec<&Span> = trace.into_iter().collect();
    let by_id: HashMap<_, &Span> = spans.iter().map(|s| (s.span_id, *s)).collect();
    let mut has_remote_child: HashMap<_, bool> = HashMap::new();
    for span in &spans {
        if let Some(parent) = by_id.get(&span.parent_span_id) {
            if parent.service_name() != span.service_name() {
                has_remote_child.insert(parent.span_id, true);
            }
        }
    }
    for span in spans.iter().copied() {
        let service = span.service_name();
        if let Some(system) = messaging_system(span) {
            let mut broker = broker_node(span, system, naming);
            if broker == system && span.kind == SpanKind::Consumer {
                // A consumer that does not name its destination takes its producer's.
                if let Some(parent) = by_id.get(&span.parent_span_id).filter(|p| messaging_system(p) == Some(system)) {
                    broker = broker_node(parent, system, naming);
                }
            }
            match span.kind {
                SpanKind::Producer => edge(service, &broker, span),
                _ => edge(&broker, service, span),
            }
            continue;
        }
        if let Some(db) = database_system(span) {
            edge(service, db, span);
        } else if span.kind == SpanKind::Client && !has_remote_child.contains_key(&span.span_id) {
            if let Some(peer) = str_attribute(span, semconv::PEER_SERVICE) {
                edge(service, peer, span);
            }
        }
        if let Some(parent) = by_id.get(&span.parent_span_id) {
            if parent.service_name() == service {
                continue;
            }
            match messaging_system(parent) {
                // The producer side already drew `service → kafka`.
                Some(system) if parent.kind == SpanKind::Producer => {
                    edge(&broker_node(parent, system, naming), service, span)
                }
                _ => edge(parent.service_name(), service, span),
            }
        }
    }
}

/// Turns accumulated edges into links, ordered by parent then child.
pub fn links_from_edges(edges: BTreeMap<(String, String), u64>) -> Vec<DependencyLink> {
    edges.into_iter().map(|((parent, child), call_count)| DependencyLink { parent, child, call_count }).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{KeyValue, Resource, SpanId};

    fn span(id: u64, parent: u64, service: &str, kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
        Span {
            span_id: SpanId(id),
            parent_span_id: SpanId(parent),
            kind,
            attributes: attrs,
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", service)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn per_destination_naming_gives_the_seed_graph_one_node_per_topic() {
        let topic = |t: &str| {
            vec![KeyValue::string("messaging.system", "kafka"), KeyValue::string("messaging.destination.name", t)]
        };
        let trace = vec![
            span(1, 0, "ingestion-service", SpanKind::Internal, vec![]),
            span(2, 1, "ingestion-service", SpanKind::Producer, topic("market-data-raw")),
            // A consumer that does not name its topic takes its producer's.
            span(3, 2, "processor-service", SpanKind::Consumer, vec![KeyValue::string("messaging.system", "kafka")]),
            span(4, 3, "processor-service", SpanKind::Producer, topic("market-data-enriched")),
            span(5, 4, "storage-service", SpanKind::Consumer, topic("market-data-enriched")),
            span(6, 5, "storage-service", SpanKind::Client, vec![KeyValue::string("db.system", "postgresql")]),
            // A child of a consumer that is not itself a messaging span: its own service.
            span(7, 3, "processor-service", SpanKind::Internal, vec![]),
        ];
        let mut edges: Vec<(String, String)> = Vec::new();
        for_each_edge_named(&trace, BrokerNodes::PerDestination, |p, c, _| edges.push((p.into(), c.into())));
        edges.sort();
        let want: Vec<(String, String)> = [
            ("ingestion-service", "kafka/market-data-raw"),
            ("kafka/market-data-enriched", "storage-service"),
            ("kafka/market-data-raw", "processor-service"),
            ("processor-service", "kafka/market-data-enriched"),
            ("storage-service", "postgresql"),
        ]
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
        assert_eq!(edges, want);
    }

    #[test]
    fn seed_pipeline_draws_kafka_and_postgres_nodes() {
        let kafka = || vec![KeyValue::string("messaging.system", "kafka")];
        let trace = vec![
            span(1, 0, "ingestion-service", SpanKind::Internal, vec![]),
            span(2, 1, "ingestion-service", SpanKind::Producer, kafka()),
            span(3, 2, "processor-service", SpanKind::Consumer, kafka()),
            span(4, 3, "processor-service", SpanKind::Producer, kafka()),
            span(5, 4, "storage-service", SpanKind::Consumer, kafka()),
            span(6, 5, "storage-service", SpanKind::Client, vec![KeyValue::string("db.system", "postgresql")]),
        ];
        let mut edges = BTreeMap::new();
        dependency_edges(&trace, &mut edges);
        let links: Vec<(String, String, u64)> =
            links_from_edges(edges).into_iter().map(|l| (l.parent, l.child, l.call_count)).collect();
        assert_eq!(
            links,
            vec![
                ("ingestion-service".into(), "kafka".into(), 1),
                ("kafka".into(), "processor-service".into(), 1),
                ("kafka".into(), "storage-service".into(), 1),
                ("processor-service".into(), "kafka".into(), 1),
                ("storage-service".into(), "postgresql".into(), 1),
            ]
        );
    }

    #[test]
    fn plain_rpc_edge_and_peer_service_fallback() {
        let trace = vec![
            span(1, 0, "api", SpanKind::Server, vec![]),
            span(2, 1, "api", SpanKind::Client, vec![KeyValue::string("peer.service", "quotes")]),
            span(3, 2, "quotes", SpanKind::Server, vec![]),
            span(4, 1, "api", SpanKind::Client, vec![KeyValue::string("peer.service", "legacy")]),
        ];
        let mut edges = BTreeMap::new();
        dependency_edges(&trace, &mut edges);
        assert_eq!(edges.get(&("api".into(), "quotes".into())), Some(&1));
        assert_eq!(edges.get(&("api".into(), "legacy".into())), Some(&1));
        assert_eq!(edges.len(), 2);
    }
}
