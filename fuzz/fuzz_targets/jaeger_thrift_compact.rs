#![no_main]
//! Fuzz target: Jaeger `Agent.emitBatch` and bare `Batch` in thrift compact (UDP 6831).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::jaeger_thrift::decode_emit_batch_compact(data);
    let _ = spindle_codec::jaeger_thrift::decode_batch_compact(data);
});
