//! The receivers' OTLP protobuf decoder (`otlp_wire`) against the reference path through the
//! generated `opentelemetry-proto` types (`otlp::decode_request_prost`): for every input the
//! same spans, rejections and reasons, and an error exactly when prost fails.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;
use spindle_codec::{otlp, otlp_wire, CodecError, Decoded};

/// Compared through `Debug`, so that a NaN attribute equals itself.
fn same(a: &Result<Decoded, CodecError>, b: &Result<Decoded, CodecError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => format!("{a:?}") == format!("{b:?}"),
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

fn check(bytes: &[u8]) {
    let fast = otlp_wire::decode_request(bytes);
    let reference = otlp::decode_request_prost(bytes);
    assert!(same(&fast, &reference), "input {bytes:02x?}\nwire: {fast:?}\nprost: {reference:?}");
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(AnyValue { value: None }),
        ".{0,6}".prop_map(|s| AnyValue { value: Some(any_value::Value::StringValue(s)) }),
        any::<bool>().prop_map(|b| AnyValue { value: Some(any_value::Value::BoolValue(b)) }),
        any::<i64>().prop_map(|i| AnyValue { value: Some(any_value::Value::IntValue(i)) }),
        any::<f64>().prop_map(|d| AnyValue { value: Some(any_value::Value::DoubleValue(d)) }),
        prop::collection::vec(any::<u8>(), 0..4)
            .prop_map(|b| AnyValue { value: Some(any_value::Value::BytesValue(b)) }),
        any::<i32>().prop_map(|i| AnyValue { value: Some(any_value::Value::StringValueStrindex(i)) }),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|values| AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values })) }),
            prop::collection::vec(("[a-c]{1,2}", prop::option::of(inner)), 0..3).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs.into_iter().map(|(key, value)| KeyValue { key, value, key_strindex: 0 }).collect(),
                })),
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(("[a-z.]{1,8}", prop::option::of(any_value()), 0..2i32), 0..4).prop_map(|kvs| {
        kvs.into_iter().map(|(key, value, key_strindex)| KeyValue { key, value, key_strindex }).collect()
    })
}

/// Ids of the right length most of the time, sometimes empty, short or all zero.
fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), len),
        1 => Just(Vec::new()),
        1 => Just(vec![0; len]),
        1 => prop::collection::vec(any::<u8>(), 0..len + 3),
    ]
}

fn proto_span() -> impl Strategy<Value = Span> {
    (
        (id(16), id(8), prop_oneof![Just(Vec::new()), id(8)], "[a-z ]{0,8}", "[a-z=,]{0,5}", -1..7i32, any::<u32>()),
        (any::<u64>(), any::<u64>(), attributes(), any::<u32>(), any::<u32>(), any::<u32>()),
        (
            prop::collection::vec((any::<u64>(), "[a-z]{0,4}", attributes(), any::<u32>()), 0..2),
            prop::collection::vec((id(16), id(8), "[a-z=]{0,3}", attributes(), any::<u32>(), any::<u32>()), 0..2),
            prop::option::of(("[a-z ]{0,6}", -1..4i32)),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, name, trace_state, kind, flags),
                (start, end, attributes, dropped_attributes_count, dropped_events_count, dropped_links_count),
                (events, links, status),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count,
                events: events
                    .into_iter()
                    .map(|(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
                        time_unix_nano,
                        name,
                        attributes,
                        dropped_attributes_count,
                    })
                    .collect(),
                dropped_events_count,
                links: links
                    .into_iter()
                    .map(|(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| span::Link {
                        trace_id,
                        span_id,
                        trace_state,
                        attributes,
                        dropped_attributes_count,
                        flags,
                    })
                    .collect(),
                dropped_links_count,
                status: status.map(|(message, code)| Status { message, code }),
            },
        )
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = prop::option::of(("[a-z]{0,5}", "[0-9.]{0,3}", attributes(), any::<u32>())).prop_map(|s| {
        s.map(|(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count,
        })
    });
    let scope_spans = (scope, prop::collection::vec(proto_span(), 0..4), "[a-z]{0,3}")
        .prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url });
    let resource = prop::option::of((attributes(), any::<u32>())).prop_map(|r| {
        r.map(|(attributes, dropped_attributes_count)| Resource {
            attributes,
            dropped_attributes_count,
            entity_refs: Vec::new(),
        })
    });
    let resource_spans = (resource, prop::collection::vec(scope_spans, 0..3), "[a-z]{0,3}")
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans { resource, scope_spans, schema_url });
    prop::collection::vec(resource_spans, 0..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Copies a slice of the input to another place: repeated and reordered fields.
    Splice(usize, usize, usize),
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        if out.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(at, x) => {
                let i = at % out.len();
                out[i] ^= x | 1;
            }
            Mutation::Truncate(at) => out.truncate(at % out.len()),
            Mutation::Insert(at, b) => {
                let i = at % (out.len() + 1);
                out.splice(i..i, b.iter().copied());
            }
            Mutation::Splice(from, len, to) => {
                let from = from % out.len();
                let piece: Vec<u8> = out[from..(from + len).min(out.len())].to_vec();
                let to = to % (out.len() + 1);
                out.splice(to..to, piece);
            }
        }
    }
    out
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, x)| Mutation::Flip(a, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..6)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1..40usize, any::<usize>()).prop_map(|(f, l, t)| Mutation::Splice(f, l, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_request_decodes_as_prost_decodes_it(request in request()) {
        let bytes = request.encode_to_vec();
        let fast = otlp_wire::decode_request(&bytes);
        prop_assert!(fast.is_ok(), "{fast:?}");
        check(&bytes);
    }

    #[test]
    fn any_mutated_request_fails_or_decodes_as_prost_does(request in request(), mutations in prop::collection::vec(mutation(), 1..4)) {
        check(&mutate(&request.encode_to_vec(), &mutations));
    }

    #[test]
    fn any_bytes_fail_or_decode_as_prost_does(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check(&bytes);
    }
}

// ---- hand-made wire forms prost accepts but a generated encoder never writes ----

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

fn key(field: u32, wire: u8) -> Vec<u8> {
    varint(u64::from(field) << 3 | u64::from(wire))
}

fn len_field(field: u32, payload: &[u8]) -> Vec<u8> {
    [key(field, 2), varint(payload.len() as u64), payload.to_vec()].concat()
}

fn good_span() -> Vec<u8> {
    [len_field(1, &[7; 16]), len_field(2, &[3; 8]), len_field(5, b"op")].concat()
}

fn string_attribute(k: &str, v: &str) -> Vec<u8> {
    [len_field(1, k.as_bytes()), len_field(2, &len_field(1, v.as_bytes()))].concat()
}

/// A request of one resource, one scope and the given span bytes.
fn wrap(resource: &[u8], scope: &[u8], span: &[u8]) -> Vec<u8> {
    let scope_spans = [len_field(1, scope), len_field(2, span)].concat();
    len_field(1, &[len_field(1, resource), len_field(2, &scope_spans)].concat())
}

#[test]
fn fields_in_any_order_repeated_and_unknown_decode_as_prost_decodes_them() {
    let resource = len_field(1, &string_attribute("service.name", "api"));
    // The resource after the scope spans, the scope after the spans.
    let scope_spans = [len_field(2, &good_span()), len_field(1, &len_field(1, b"lib"))].concat();
    let late = len_field(1, &[len_field(2, &scope_spans), len_field(1, &resource)].concat());
    check(&late);
    let decoded = otlp_wire::decode_request(&late).unwrap();
    assert_eq!(decoded.spans[0].service_name(), "api");
    assert_eq!(decoded.spans[0].scope.name, "lib");

    // A resource in two parts merges; a span's name given twice keeps the last.
    let second = len_field(1, &string_attribute("host.name", "h1"));
    let span = [good_span(), len_field(5, b"renamed")].concat();
    let scope_spans = len_field(2, &span);
    let merged = len_field(1, &[len_field(1, &resource), len_field(2, &scope_spans), len_field(1, &second)].concat());
    check(&merged);
    let decoded = otlp_wire::decode_request(&merged).unwrap();
    assert_eq!(decoded.spans[0].resource.attributes.len(), 2);
    assert_eq!(decoded.spans[0].name, "renamed");

    // Unknown fields of every wire type, a group with nested fields among them.
    let unknown = [
        key(99, 0),
        varint(300),
        key(98, 1),
        vec![1; 8],
        len_field(97, b"xyz"),
        key(96, 3),
        key(5, 0),
        varint(1),
        len_field(6, b"in group"),
        key(96, 4),
        key(95, 5),
        vec![2; 4],
    ]
    .concat();
    for (r, s, sp) in [
        ([resource.clone(), unknown.clone()].concat(), Vec::new(), good_span()),
        (resource.clone(), unknown.clone(), good_span()),
        (resource.clone(), Vec::new(), [good_span(), unknown.clone()].concat()),
    ] {
        let request = wrap(&r, &s, &sp);
        check(&request);
        assert_eq!(otlp_wire::decode_request(&request).unwrap().spans.len(), 1);
    }
    // An AnyValue whose oneof is set twice: the last wins; two array parts merge.
    let value = [len_field(1, b"first"), key(3, 0), varint(5)].concat();
    let kv = [len_field(1, b"k"), len_field(2, &value)].concat();
    let array = |v: &[u8]| len_field(5, &len_field(1, v));
    let two_arrays = [array(&[key(3, 0), varint(1)].concat()), array(&[key(2, 0), varint(1)].concat())].concat();
    let kv2 = [len_field(1, b"a"), len_field(2, &two_arrays)].concat();
    let request = wrap(&resource, &[], &[good_span(), len_field(9, &kv), len_field(9, &kv2)].concat());
    check(&request);
    let decoded = otlp_wire::decode_request(&request).unwrap();
    assert_eq!(format!("{:?}", decoded.spans[0].attributes[0].value), "Int(5)");
    assert_eq!(format!("{:?}", decoded.spans[0].attributes[1].value), "Array([Int(1), Bool(true)])");
}

#[test]
fn malformed_wire_forms_fail_as_prost_fails() {
    let resource = len_field(1, &string_attribute("service.name", "api"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("group ended by another tag", wrap(&resource, &[], &[good_span(), key(90, 3), key(91, 4)].concat())),
        ("end group without start", wrap(&resource, &[], &[good_span(), key(90, 4)].concat())),
        ("wire type 6", wrap(&resource, &[], &[good_span(), key(90, 6)].concat())),
        ("field number 0", wrap(&resource, &[], &[good_span(), vec![0x00, 0x00]].concat())),
        ("name as a varint", wrap(&resource, &[], &[good_span(), key(5, 0), varint(1)].concat())),
        ("start time as a varint", wrap(&resource, &[], &[good_span(), key(7, 0), varint(1)].concat())),
        ("flags as fixed64", wrap(&resource, &[], &[good_span(), key(16, 1), vec![0; 8]].concat())),
        ("name not UTF-8", wrap(&resource, &[], &[good_span(), len_field(5, &[0xff, 0xfe])].concat())),
        ("schema url not UTF-8", len_field(1, &[len_field(1, &resource), len_field(3, &[0xc3])].concat())),
        ("key strindex as bytes", wrap(&resource, &[], &[good_span(), len_field(9, &len_field(3, b"x"))].concat())),
        ("eleven-byte varint", wrap(&resource, &[], &[good_span(), key(6, 0), vec![0xff; 10], vec![0x01]].concat())),
        ("tenth varint byte 2", wrap(&resource, &[], &[good_span(), key(6, 0), vec![0xff; 9], vec![0x02]].concat())),
        ("key above u32", [vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01], vec![0]].concat()),
        (
            "entity ref not UTF-8",
            wrap(&[resource.clone(), len_field(3, &len_field(1, &[0xff]))].concat(), &[], &good_span()),
        ),
    ];
    for (name, bytes) in &cases {
        assert!(otlp_wire::decode_request(bytes).is_err(), "{name}");
        check(bytes);
    }
    // The tenth varint byte 1 is still a u64.
    let fine = wrap(&resource, &[], &[good_span(), key(6, 0), vec![0xff; 9], vec![0x01]].concat());
    assert!(otlp_wire::decode_request(&fine).is_ok());
    check(&fine);
}

#[test]
fn nesting_is_limited_exactly_where_prost_limits_it() {
    // AnyValue → ArrayValue → AnyValue …: find prost's last accepted depth and compare on
    // both sides of it, with the innermost value a leaf, an unknown field and a group.
    let resource = len_field(1, &string_attribute("service.name", "api"));
    let mut accepted = 0;
    for depth in 0..60 {
        for innermost in
            [[key(3, 0), varint(1)].concat(), [key(99, 0), varint(1)].concat(), [key(98, 3), key(98, 4)].concat()]
        {
            let mut value = innermost;
            for _ in 0..depth {
                value = len_field(5, &len_field(1, &value));
            }
            let kv = [len_field(1, b"k"), len_field(2, &value)].concat();
            let request = wrap(&resource, &[], &[good_span(), len_field(9, &kv)].concat());
            check(&request);
            if otlp::decode_request_prost(&request).is_ok() {
                accepted = accepted.max(depth);
            }
        }
    }
    assert!((40..59).contains(&accepted), "the limit was crossed inside the range tried: {accepted}");
}

#[test]
fn real_client_fixtures_decode_as_prost_decodes_them() {
    for name in ["otlp_proto_otel_python.bin", "otlp_grpc_otel_python.bin"] {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let bytes = std::fs::read(&path).unwrap();
        let fast = otlp_wire::decode_request(&bytes).unwrap();
        assert!(!fast.spans.is_empty(), "{name}");
        check(&bytes);
    }
}
