#![no_main]
//! Fuzz target: OTLP protobuf ExportTraceServiceRequest (`otlp::decode_request`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::otlp::decode_request(data);
});
