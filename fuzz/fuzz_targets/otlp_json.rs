#![no_main]
//! Fuzz target: OTLP JSON (`otlp_json::decode_request`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::otlp_json::decode_request(data);
});
