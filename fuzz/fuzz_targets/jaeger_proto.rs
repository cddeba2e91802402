#![no_main]
//! Fuzz target: Jaeger api_v2 `PostSpansRequest` (gRPC 14250).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::jaeger_proto::decode_post_spans_request(data);
});
