#![no_main]
//! Fuzz target: Zipkin v2 proto3 `ListOfSpans`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::zipkin::decode_v2_proto(data);
});
