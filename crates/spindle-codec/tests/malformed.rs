//! Malformed input for every decoder: truncated, garbage, huge declared lengths, deep
//! nesting, wrong types. Each must be an error whose message says what was wrong, so the
//! receivers can answer 400 with a reason and count the rejection.

use std::path::PathBuf;

use spindle_codec::{jaeger_proto, jaeger_thrift, otlp, otlp_json, sampling, zipkin, CodecError, Decoded};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

type Decode = fn(&[u8]) -> Result<Decoded, CodecError>;

/// (decoder name, decoder, a good fixture for it)
const DECODERS: &[(&str, Decode, &str)] = &[
    ("otlp proto", otlp::decode_request, "otlp_proto_otel_python.bin"),
    ("otlp json", otlp_json::decode_request, "otlp_json_otel_python.json"),
    ("jaeger compact", jaeger_thrift::decode_emit_batch_compact, "jaeger_compact_otel_python.bin"),
    ("jaeger binary udp", jaeger_thrift::decode_emit_batch_binary, "jaeger_binary_udp_node_jaeger_client.bin"),
    ("jaeger binary http", jaeger_thrift::decode_batch_binary, "jaeger_binary_http_otel_python.bin"),
    ("jaeger proto", jaeger_proto::decode_post_spans_request, "jaeger_proto_grpc_otel_python.bin"),
    ("zipkin v2 json", zipkin::decode_v2_json, "zipkin_v2_json_otel_python.json"),
    ("zipkin v2 proto", zipkin::decode_v2_proto, "zipkin_v2_proto_otel_python.bin"),
    ("zipkin v1 json", zipkin::decode_v1_json, "zipkin_v1_json_otel_python.json"),
];

fn error_of(name: &str, decode: Decode, input: &[u8]) -> String {
    match decode(input) {
        Err(e) => e.to_string(),
        Ok(d) => {
            panic!("{name}: decoded {} spans from malformed input {:?}", d.spans.len(), &input[..input.len().min(32)])
        }
    }
}

/// A protobuf length-delimited field.
fn field(number: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut len = payload.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(payload);
    out
}

#[test]
fn truncated_fixtures_are_errors() {
    for (name, decode, file) in DECODERS {
        let good = fixture(file);
        assert!(decode(&good).is_ok(), "{name}: the fixture itself must decode");
        // Cut inside the last span: the JSON misses its closing brackets, the binary formats
        // a length-prefixed tail.
        for cut in [1, 2, 7, good.len() / 2] {
            let err = error_of(name, *decode, &good[..good.len() - cut]);
            assert!(!err.is_empty(), "{name}");
        }
    }
}

#[test]
fn garbage_is_an_error_naming_the_format() {
    let garbage: &[u8] = b"\xde\xad\xbe\xef not a payload \xff\xff\xff\xff";
    for (name, decode, _) in DECODERS {
        let err = error_of(name, *decode, garbage);
        let names_format = ["protobuf", "JSON", "thrift"].iter().any(|f| err.contains(f));
        assert!(names_format, "{name}: {err}");
    }
}

#[test]
fn huge_declared_lengths_are_refused() {
    // Thrift binary: a bare Batch whose spans list claims i32::MAX elements.
    let mut binary = vec![0x0f, 0x00, 0x02, 0x0c];
    binary.extend_from_slice(&i32::MAX.to_be_bytes());
    let err = error_of("jaeger binary http", jaeger_thrift::decode_batch_binary, &binary);
    assert!(err.contains("list of length 2147483647 at byte 3 exceeds 0"), "{err}");

    // Thrift binary: emitBatch whose method name claims 1 GiB.
    let mut name = vec![0x80, 0x01, 0x00, 0x04];
    name.extend_from_slice(&(1i32 << 30).to_be_bytes());
    let err = error_of("jaeger binary udp", jaeger_thrift::decode_emit_batch_binary, &name);
    assert!(err.contains("binary of length 1073741824 at byte 4"), "{err}");

    // Thrift compact: operationName claiming 2^31-1 bytes.
    let mut compact = vec![0x82, 0x81, 0x00, 0x09];
    compact.extend_from_slice(b"emitBatch");
    compact.extend_from_slice(&[0x1c, 0x29, 0x1c, 0x58, 0xff, 0xff, 0xff, 0xff, 0x07]);
    let err = error_of("jaeger compact", jaeger_thrift::decode_emit_batch_compact, &compact);
    assert!(err.contains("length 2147483647"), "{err}");

    // Protobuf: a length-delimited field claiming 2^32 bytes.
    let proto = [0x0a, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00];
    for (name, decode, _) in DECODERS.iter().filter(|(n, _, _)| n.contains("proto")) {
        let err = error_of(name, *decode, &proto);
        assert!(err.contains("invalid protobuf"), "{name}: {err}");
    }
}

#[test]
fn deep_nesting_is_refused() {
    // Values the decoders must build, nested far beyond serde_json's recursion limit.
    let deep = [b"[".repeat(100_000), b"]".repeat(100_000)].concat();
    let wrap = |prefix: &[u8], suffix: &[u8]| [prefix, &deep, suffix].concat();
    let any_value = [
        &br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":"#[..],
        &br#"{"arrayValue":{"values":["#.repeat(2_000),
        &b"]}}".repeat(2_000),
        &b"}]}]}]}]}"[..],
    ]
    .concat();
    for (name, decode, json) in [
        ("otlp json", otlp_json::decode_request as Decode, any_value),
        ("zipkin v2 json", zipkin::decode_v2_json, wrap(br#"[{"traceId":"1","id":"1","tags":{"k":"#, b"}}]")),
        (
            "zipkin v1 json",
            zipkin::decode_v1_json,
            wrap(br#"[{"traceId":"1","id":"1","binaryAnnotations":[{"key":"k","value":"#, b"}]}]"),
        ),
    ] {
        let err = error_of(name, decode, &json);
        assert!(err.contains("recursion limit exceeded"), "{name}: {err}");
    }
    // Deep nesting in fields a decoder skips is walked without recursion and ignored.
    for (name, decode, json) in [
        ("otlp json", otlp_json::decode_request as Decode, wrap(br#"{"future":"#, b"}")),
        ("zipkin v2 json", zipkin::decode_v2_json, wrap(br#"[{"traceId":"1","id":"1","future":"#, b"}]")),
    ] {
        assert!(decode(&json).is_ok(), "{name}");
    }
    // Protobuf: OTLP's AnyValue is recursive (arrayValue → values → AnyValue); nest it
    // beyond prost's recursion limit.
    let mut value = Vec::new();
    for _ in 0..500 {
        value = field(1, &field(5, &value)); // ArrayValue.values[0] = AnyValue{array_value}
    }
    let key_value = [field(1, b"k"), field(2, &field(5, &value))].concat();
    let request = field(1, &field(2, &field(2, &field(9, &key_value))));
    let err = error_of("otlp proto", otlp::decode_request, &request);
    assert!(err.contains("recursion limit"), "{err}");
    // The Jaeger and Zipkin schemas are not recursive; nesting there is just bytes of a
    // bytes field or an unknown field, skipped without recursion.
    for decode in [jaeger_proto::decode_post_spans_request as Decode, zipkin::decode_v2_proto] {
        let _ = decode(&request);
    }
    // Thrift: unknown struct fields nested 10,000 deep, skipped until the depth limit.
    let mut thrift = vec![0x82, 0x81, 0x00, 0x09];
    thrift.extend_from_slice(b"emitBatch");
    thrift.extend(std::iter::repeat_n(0x9c, 10_000)); // field 9 (unknown), a struct, again and again
    let err = error_of("jaeger compact", jaeger_thrift::decode_emit_batch_compact, &thrift);
    assert!(err.contains("nesting deeper than 32 levels"), "{err}");
}

#[test]
fn wrong_types_name_the_field() {
    for (name, decode, body, needle) in [
        ("otlp json", otlp_json::decode_request as Decode, &br#"{"resourceSpans":{"a":1}}"#[..], "invalid type: map"),
        (
            "zipkin v2 json",
            zipkin::decode_v2_json,
            br#"[{"traceId":"1","id":"1","duration":"long"}]"#,
            "\"long\" is not an unsigned integer",
        ),
        (
            "zipkin v2 json",
            zipkin::decode_v2_json,
            br#"[{"traceId":"1","id":"1","annotations":{}}]"#,
            "invalid type: map",
        ),
        (
            "zipkin v1 json",
            zipkin::decode_v1_json,
            br#"[{"traceId":"1","id":"1","binaryAnnotations":"x"}]"#,
            "invalid type: string",
        ),
        ("zipkin v2 proto", zipkin::decode_v2_proto, &[0x08, 0x01], "invalid protobuf"),
    ] {
        let err = error_of(name, decode, body);
        assert!(err.contains(needle), "{name}: {err}");
    }
    // Thrift: Span.traceIdLow (field 1) sent as a string.
    let mut thrift = vec![0x0f, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x0b, 0x00, 0x01];
    thrift.extend_from_slice(&[0, 0, 0, 1, b'x', 0, 0]);
    let err = error_of("jaeger binary http", jaeger_thrift::decode_batch_binary, &thrift);
    assert!(err.contains("Span.traceIdLow (field 1) has type binary, expected i64"), "{err}");

    let err = sampling::SamplingStrategies::parse(br#"{"default_strategy":{"type":5}}"#, 0.001).unwrap_err();
    assert!(err.to_string().contains("sampling strategies file: invalid type: integer"), "{err}");
}

#[test]
fn good_input_still_decodes_after_bad_input() {
    // Decoders keep no state between calls; this pins that down for future changes.
    for (name, decode, file) in DECODERS {
        let _ = decode(b"\x00\xff garbage");
        assert!(decode(&fixture(file)).is_ok(), "{name}");
    }
}
