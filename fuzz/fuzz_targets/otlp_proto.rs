#![no_main]
//! Fuzz target: OTLP protobuf ExportTraceServiceRequest (`otlp::decode_request`, the
//! receivers' direct decoder), checked against the reference path through the generated
//! prost types: both fail, or both give the same spans and rejections.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fast = spindle_codec::otlp::decode_request(data);
    let reference = spindle_codec::otlp::decode_request_prost(data);
    match (&fast, &reference) {
        // Compared through Debug, so that a NaN attribute equals itself.
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(_), Err(_)) => {}
        _ => panic!("decoders disagree: direct {fast:?}, prost {reference:?}"),
    }
});
