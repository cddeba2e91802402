//! A mergeable latency sketch with a bounded relative error.
//!
//! Values (nanoseconds) fall into logarithmic buckets `(γ^(i-1), γ^i]` with γ = 1.04, and a
//! quantile is answered with the bucket's midpoint `2γ^i/(γ+1)`, so every answer is within
//! ±α = (γ−1)/(γ+1) ≈ 1.96% of a value that really is at that rank. Merging adds bucket
//! counts, so per-minute sketches roll up into any window exactly as one sketch would.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const GAMMA: f64 = 1.04;

/// The documented relative error bound of quantiles.
pub const RELATIVE_ERROR: f64 = (GAMMA - 1.0) / (GAMMA + 1.0);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySketch {
    /// bucket index → count; index 0 holds zero durations.
    buckets: Buckets,
    count: u64,
    sum_nanos: u128,
    min: u64,
    max: u64,
}

/// Bucket counts by index, sorted by index: a sketch holds a few dozen, and merging two
/// is a linear walk (span-metric rollups merge thousands per query). Serialized as a map
/// from index to count, as the earlier `BTreeMap` was, so snapshots stay readable.
#[derive(Debug, Clone, Default, PartialEq)]
struct Buckets(Vec<(i32, u64)>);

impl Buckets {
    fn add(&mut self, index: i32, count: u64) {
        match self.0.binary_search_by_key(&index, |b| b.0) {
            Ok(at) => self.0[at].1 += count,
            Err(at) => self.0.insert(at, (index, count)),
        }
    }

    fn merge(&mut self, other: &Buckets) {
        // In place when every index of `other` is already here (the usual case once a
        // series has seen some traffic); else one merged vector.
        let mut at = 0;
        let mut in_place = true;
        for (i, _) in &other.0 {
            while at < self.0.len() && self.0[at].0 < *i {
                at += 1;
            }
            if at == self.0.len() || self.0[at].0 != *i {
                in_place = false;
                break;
            }
        }
        if in_place {
            let mut at = 0;
            for (i, c) in &other.0 {
                while self.0[at].0 < *i {
                    at += 1;
                }
                self.0[at].1 += c;
            }
            return;
        }
        let mut merged = Vec::with_capacity(self.0.len() + other.0.len());
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a[i].0 < b[j].0) {
                merged.push(a[i]);
                i += 1;
            } else if i == a.len() || b[j].0 < a[i].0 {
                merged.push(b[j]);
                j += 1;
            } else {
                merged.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
        self.0 = merged;
    }
}

impl Serialize for Buckets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(i, c)| (i, c)))
    }
}

impl<'de> Deserialize<'de> for Buckets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<i32, u64>::deserialize(deserializer)?;
        Ok(Buckets(map.into_iter().collect()))
    }
}

fn index(value: u64) -> i32 {
    if value == 0 {
        return 0;
    }
    ((value as f64).ln() / GAMMA.ln()).ceil() as i32 + 1
}

fn representative(index: i32) -> f64 {
    if index == 0 {
        return 0.0;
    }
    2.0 * GAMMA.powi(index - 1) / (GAMMA + 1.0)
}

impl LatencySketch {
    pub fn add(&mut self, nanos: u64) {
        self.buckets.add(index(nanos), 1);
        if self.count == 0 || nanos < self.min {
            self.min = nanos;
        }
        self.max = self.max.max(nanos);
        self.count += 1;
        self.sum_nanos += u128::from(nanos);
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        self.buckets.merge(&other.buckets);
        if self.count == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_nanos(&self) -> u128 {
        self.sum_nanos
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), within [`RELATIVE_ERROR`]; `None` when empty.
    /// Uses the nearest-rank definition: the value of rank ⌈q·n⌉.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.buckets.0.iter() {
            seen += c;
            if seen >= rank {
                // The extremes are known exactly; clamp so answers never leave [min, max].
                return Some(representative(*i).clamp(self.min as f64, self.max as f64));
            }
        }
        Some(self.max as f64)
    }
}

/// Builds one [`LatencySketch`] from many values at once: values are only noted (their
/// bucket index) while a scan runs and bucketed in one sort at the end, which for the
/// hundreds of thousands of values of a grouped scan is several times cheaper than
/// inserting each into a sorted bucket list. Gives exactly the sketch `add` would.
#[derive(Debug, Clone, Default)]
pub struct SketchBuilder {
    indexes: Vec<i32>,
    sum_nanos: u128,
    min: u64,
    max: u64,
}

impl SketchBuilder {
    pub fn add(&mut self, nanos: u64) {
        if self.indexes.is_empty() || nanos < self.min {
            self.min = nanos;
        }
        self.max = self.max.max(nanos);
        self.sum_nanos += u128::from(nanos);
        self.indexes.push(index(nanos));
    }

    /// Takes in every latency `other` noted, as if they had been added here.
    pub fn absorb(&mut self, other: SketchBuilder) {
        if other.indexes.is_empty() {
            return;
        }
        if self.indexes.is_empty() || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.sum_nanos += other.sum_nanos;
        self.indexes.extend(other.indexes);
    }

    pub fn build(mut self) -> LatencySketch {
        self.indexes.sort_unstable();
        let mut buckets: Vec<(i32, u64)> = Vec::new();
        for i in &self.indexes {
            match buckets.last_mut() {
                Some((last, count)) if last == i => *count += 1,
                _ => buckets.push((*i, 1)),
            }
        }
        LatencySketch {
            buckets: Buckets(buckets),
            count: self.indexes.len() as u64,
            sum_nanos: self.sum_nanos,
            min: self.min,
            max: self.max,
        }
    }
}

/// The exact nearest-rank quantile of sorted values, the reference the sketch is tested against.
pub fn exact_quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(estimate: f64, exact: u64) -> bool {
        (estimate - exact as f64).abs() <= RELATIVE_ERROR * exact as f64 + 1e-9
    }

    #[test]
    fn quantiles_are_within_the_documented_error_and_merging_is_exact() {
        let mut seed = 42u64;
        for round in 0..50 {
            let n = 1 + (round * 97) % 3000;
            let mut values = Vec::new();
            let mut whole = LatencySketch::default();
            let mut parts = [LatencySketch::default(), LatencySketch::default(), LatencySketch::default()];
            for i in 0..n {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = (seed >> 33) % 5_000_000_000 / (1 + (seed % 1000));
                values.push(v);
                whole.add(v);
                parts[i % 3].add(v);
            }
            values.sort_unstable();
            let mut merged = LatencySketch::default();
            for p in &parts {
                merged.merge(p);
            }
            assert_eq!(merged, whole, "merge equals one sketch");
            for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
                let exact = exact_quantile(&values, q).unwrap();
                let estimate = whole.quantile(q).unwrap();
                assert!(within(estimate, exact), "q={q} n={n}: {estimate} vs {exact}");
            }
        }
        assert_eq!(LatencySketch::default().quantile(0.5), None);
    }

    #[test]
    fn a_built_sketch_equals_one_added_to_value_by_value() {
        let mut seed = 7u64;
        for n in [0usize, 1, 2, 17, 5000] {
            let mut added = LatencySketch::default();
            let mut builder = SketchBuilder::default();
            for _ in 0..n {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = if seed.is_multiple_of(50) { 0 } else { (seed >> 33) % 3_000_000_000 / (1 + (seed % 500)) };
                added.add(v);
                builder.add(v);
            }
            assert_eq!(builder.build(), added, "n={n}");
        }
    }
}
