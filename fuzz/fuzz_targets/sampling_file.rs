#![no_main]
//! Fuzz target: Jaeger sampling strategies file, parsed and every response rendered.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(strategies) = spindle_codec::sampling::SamplingStrategies::parse(data, 0.001) {
        let _ = strategies.default_strategy.to_json();
        for response in strategies.service_strategies.values() {
            let _ = response.to_json();
        }
    }
});
