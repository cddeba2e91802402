#![no_main]
//! Fuzz target: Zipkin v1 JSON (`POST /api/v1/spans`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::zipkin::decode_v1_json(data);
});
