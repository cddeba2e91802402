#![no_main]
//! Fuzz target: Jaeger `Agent.emitBatch` (UDP 6832) and bare `Batch` (HTTP 14268) in thrift binary.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spindle_codec::jaeger_thrift::decode_emit_batch_binary(data);
    let _ = spindle_codec::jaeger_thrift::decode_batch_binary(data);
});
