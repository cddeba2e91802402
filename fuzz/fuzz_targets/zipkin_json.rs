#![no_main]
//! Fuzz target: Zipkin v2 JSON (`POST /api/v2/spans`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::zipkin::decode_v2_json(data);
});
