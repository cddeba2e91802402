//! The reference workload (`spindle-workload`) as the store's tests, benches and examples
//! consume it: batches of whole traces, one after the other in time. Included by path
//! (`#[path = ...] mod generator;`) so that every target shares this one definition.

use spindle_model::Span;
use spindle_workload::Workload;

/// Traces start this far apart: 25k traces/s, the rate of the 250k spans/s target.
pub const TRACE_SPACING_NANOS: u64 = 40_000;

/// Reference traces, seeded and reproducible, each batch starting where the last ended.
pub struct Generator {
    workload: Workload,
    next_start: u64,
}

impl Generator {
    pub fn new(seed: u64, start_unix_nano: u64) -> Self {
        Generator { workload: Workload::new(seed), next_start: start_unix_nano }
    }

    /// `traces` consecutive traces (10 spans each) in one batch.
    pub fn batch(&mut self, traces: usize) -> Vec<Span> {
        let spread = traces as u64 * TRACE_SPACING_NANOS;
        let batch = self.workload.batch(traces, self.next_start, spread);
        self.next_start += spread;
        batch
    }
}
