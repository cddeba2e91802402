//! Round trips through the columns, whole and projected, with and without promotion.

use std::sync::Arc;

use spindle_model::{AttributeValue, Event, KeyValue, Link, Span, SpanId, TraceId};

use super::*;

fn odd_span() -> Span {
    let mut span = crate::generator::Generator::new(3, 1_000).batch(1).remove(4);
    span.end_time_unix_nano = span.start_time_unix_nano - 5;
    span.trace_state = "k=v".into();
    span.attributes.insert(0, KeyValue::new("nan", AttributeValue::Double(f64::NAN)));
    span.attributes.push(KeyValue::string("http.route", "second occurrence"));
    span.attributes.push(KeyValue::new("http.request.method", AttributeValue::Int(3)));
    span.attributes.push(KeyValue::new(
        "nested",
        AttributeValue::Map(vec![KeyValue::new("a", AttributeValue::Array(vec![AttributeValue::Bytes(vec![1, 2])]))]),
    ));
    span.events.push(Event { time_unix_nano: 9, name: "no attrs".into(), ..Default::default() });
    span.links.push(Link {
        trace_id: TraceId(77),
        span_id: SpanId(78),
        trace_state: "a=b".into(),
        attributes: vec![KeyValue::new("w", AttributeValue::Bool(false))],
        dropped_attributes_count: 2,
        flags: 1,
    });
    span.links.push(Link { trace_id: TraceId(79), ..Default::default() });
    span.dropped_links_count = 4;
    span
}

#[test]
fn spans_round_trip_through_columns() {
    let mut spans = crate::generator::Generator::new(1, 1_000).batch(20);
    spans.push(odd_span());
    spans.push(Span::default());
    let mut columns = SpanColumns::new();
    let mut tables = SharedTables::default();
    for s in &spans {
        columns.push(s, &mut tables, &mut KeyMemo::default(), None);
    }
    let back = columns.decode(&tables).unwrap();
    assert_eq!(back.len(), spans.len());
    for (a, b) in back.iter().zip(&spans) {
        // NaN != NaN, so compare the encodings for the one span that has it.
        assert_eq!(postcard::to_stdvec(a).unwrap(), postcard::to_stdvec(b).unwrap());
    }
    assert_eq!(tables.resources.len(), 6);
}

#[test]
fn promoted_columns_round_trip_and_projections_do_not_depend_on_them() {
    let mut spans = crate::generator::Generator::new(2, 1_000).batch(20);
    // The first `symbol` an int: no column value, both stay in the list, in order.
    spans[0].attributes.insert(0, KeyValue::new("symbol", AttributeValue::Int(9)));
    // A second `symbol` after the string one: the first goes to the column, this to the list.
    spans[1].attributes.push(KeyValue::string("symbol", "again"));
    spans[2].attributes.retain(|kv| kv.key != "symbol");
    spans.push(odd_span());
    let promoted = AttributeColumns::choose(&spans);
    assert!(promoted.promoted().contains(&"symbol".to_string()), "{promoted:?}");
    let symbol_column = promoted.index("symbol").unwrap();
    let mut columns = SpanColumns::new();
    columns.attribute_columns = Arc::new(promoted);
    let mut tables = SharedTables::default();
    for s in &spans {
        columns.push(s, &mut tables, &mut KeyMemo::default(), None);
    }
    let back = columns.decode(&tables).unwrap();
    for (a, b) in back.iter().zip(&spans) {
        assert_eq!(postcard::to_stdvec(a).unwrap(), postcard::to_stdvec(b).unwrap());
    }
    let leaf = &columns.dedicated_str[AttributeColumns::position(symbol_column)];
    assert_eq!(leaf.values.len(), spans.len() - 2, "every span but the int one and the one without");
    assert_eq!(leaf.def[..3], [0, 1, 0]);

    // A projected read gives what `project` gives for the span in memory, whichever
    // keys the block promoted.
    let keys: Vec<String> = ["symbol", "http.route", "nan", "symbol"].map(String::from).to_vec();
    let mask = vec![true; spans.len()];
    let selected = columns.decode_selected(&tables, &mask, Some(&keys)).unwrap();
    let plain = {
        let mut plain = SpanColumns::new();
        let mut tables = SharedTables::default();
        spans.iter().for_each(|s| plain.push(s, &mut tables, &mut KeyMemo::default(), None));
        plain.decode_selected(&tables, &mask, Some(&keys)).unwrap()
    };
    for ((a, b), span) in selected.iter().zip(&plain).zip(&spans) {
        let want = project(span, Some(&keys), true);
        assert_eq!(postcard::to_stdvec(a).unwrap(), postcard::to_stdvec(&want).unwrap());
        assert_eq!(postcard::to_stdvec(b).unwrap(), postcard::to_stdvec(&want).unwrap());
    }
    assert_eq!(selected[1].attributes.iter().filter(|kv| kv.key == "symbol").count(), 2);
}
