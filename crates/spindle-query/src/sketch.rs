//! A mergeable latency sketch with a bounded relative error.
//!
//! Values (nanoseconds) fall into logarithmic buckets `(γ^(i-1), γ^i]` with γ = 1.04, and a
//! quantile is answered with the bucket's midpoint `2γ^i/(γ+1)`, so every answer is within
//! ±α = (γ−1)/(γ+1) ≈ 1.96% of a value that really is at that rank. Merging adds bucket
//! counts, so per-minute sketches roll up into any window exactly as one sketch would.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The ratio of consecutive bucket bounds. Stores that bucket durations themselves (the
/// ClickHouse store's minute statistics) compute [`bucket_index`] with it.
pub const GAMMA: f64 = 1.04;

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

/// The bucket a duration of `value` nanoseconds falls into: 0 for zero, else
/// `ceil(ln(value) / ln(GAMMA)) + 1`.
pub fn bucket_index(value: u64) -> i32 {
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
        self.buckets.add(bucket_index(nanos), 1);
        if self.count == 0 || nanos < self.min {
            self.min = nanos;
        }
        self.max = self.max.max(nanos);
        self.count += 1;
        self.sum_nanos += u128::from(nanos);
    }

    /// A sketch of `count` values that all fall into bucket `index`, with their exact sum,
    /// minimum and maximum: one row of a store's pre-bucketed statistics, merged with
    /// others into the same sketch that value-by-value `add` gives.
    pub fn from_bucket(index: i32, count: u64, sum_nanos: u128, min: u64, max: u64) -> Self {
        if count == 0 {
            return LatencySketch::default();
        }
        LatencySketch { buckets: Buckets(vec![(index, count)]), count, sum_nanos, min, max }
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

/// Builds one [`LatencySketch`] from values as a scan hands them over: each value's bucket
/// index is staged, and every [`STAGED`] values the staged indexes are counted in a dense
/// window of bucket counts, grown to cover the smallest and largest index seen. Memory is
/// bounded by the spread of the values (at most 1,134 counts, one per index a `u64` can
/// fall into), never by how many there are. Staging keeps inserts cheap when a scan feeds
/// thousands of builders: counting a batch touches a builder's window once, not once per
/// value. Gives exactly the sketch `add` would.
#[derive(Debug, Clone, Default)]
pub struct SketchBuilder {
    /// Bucket indexes not yet counted, at most [`STAGED`].
    staged: Vec<i32>,
    /// Counts of bucket indexes `first..first + counts.len()`.
    counts: Vec<u64>,
    first: i32,
    count: u64,
    sum_nanos: u128,
    min: u64,
    max: u64,
}

/// How many bucket indexes a builder stages before counting them.
const STAGED: usize = 64;

/// The number of bucket indexes a `u64` can fall into (0 to `bucket_index(u64::MAX)`), the most
/// counts a [`SketchBuilder`] ever holds.
const MAX_BUCKETS: usize = 1134;

impl SketchBuilder {
    pub fn add(&mut self, nanos: u64) {
        if self.count == 0 || nanos < self.min {
            self.min = nanos;
        }
        self.max = self.max.max(nanos);
        self.count += 1;
        self.sum_nanos += u128::from(nanos);
        self.staged.push(bucket_index(nanos));
        if self.staged.len() == STAGED {
            self.count_staged();
        }
    }

    /// Counts `count` values that all fall into bucket `index`, with their sum and extremes
    /// (a row of a store's pre-bucketed statistics), as if each had been added.
    pub fn add_bucket(&mut self, index: i32, count: u64, sum_nanos: u128, min: u64, max: u64) {
        if count == 0 {
            return;
        }
        if self.count == 0 || min < self.min {
            self.min = min;
        }
        self.max = self.max.max(max);
        self.count += count;
        self.sum_nanos += sum_nanos;
        let index = index.clamp(0, MAX_BUCKETS as i32 - 1);
        self.cover(index, index);
        self.counts[(index - self.first) as usize] += count;
    }

    fn count_staged(&mut self) {
        let (Some(&low), Some(&high)) = (self.staged.iter().min(), self.staged.iter().max()) else { return };
        self.cover(low, high);
        for i in self.staged.drain(..) {
            self.counts[(i - self.first) as usize] += 1;
        }
    }

    /// Grows the window of counts to cover indexes `low..=high`.
    fn cover(&mut self, low: i32, high: i32) {
        if self.counts.is_empty() {
            self.first = low;
        } else if low < self.first {
            let gap = (self.first - low) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, gap));
            self.first = low;
        }
        let len = (high - self.first) as usize + 1;
        if len > self.counts.len() {
            self.counts.resize(len, 0);
        }
        debug_assert!(self.counts.len() <= MAX_BUCKETS);
    }

    /// Takes in every latency `other` counted, as if they had been added here.
    pub fn absorb(&mut self, mut other: SketchBuilder) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other;
            return;
        }
        other.count_staged();
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
        self.cover(other.first, other.first + other.counts.len() as i32 - 1);
        let offset = (other.first - self.first) as usize;
        for (mine, theirs) in self.counts[offset..].iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    /// How many bucket counts the builder holds: the spread of its values, not their number.
    pub fn bucket_count(&self) -> usize {
        self.counts.len()
    }

    pub fn build(mut self) -> LatencySketch {
        self.count_staged();
        let first = self.first;
        let buckets =
            self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (first + i as i32, *c)).collect();
        LatencySketch {
            buckets: Buckets(buckets),
            count: self.count,
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
    fn buckets_count_like_their_values() {
        let values: Vec<u64> = (0..5_000u64).map(|i| (i * 7_919) % 40_000_000 + i % 3).collect();
        let mut one_by_one = SketchBuilder::default();
        values.iter().for_each(|v| one_by_one.add(*v));
        let mut by_bucket: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
        values.iter().for_each(|v| by_bucket.entry(bucket_index(*v)).or_default().push(*v));
        let mut bucketed = SketchBuilder::default();
        // Buckets interleaved with single values, in reverse, as a store's rows may come.
        for (i, (index, vs)) in by_bucket.iter().rev().enumerate() {
            let sum = vs.iter().map(|v| u128::from(*v)).sum();
            let (min, max) = (*vs.iter().min().expect("non-empty"), *vs.iter().max().expect("non-empty"));
            if i % 2 == 0 {
                bucketed.add_bucket(*index, vs.len() as u64, sum, min, max);
            } else {
                vs.iter().for_each(|v| bucketed.add(*v));
            }
        }
        bucketed.add_bucket(7, 0, 0, 0, 0);
        assert_eq!(bucketed.build(), one_by_one.build());
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

    #[test]
    fn builders_absorbed_in_any_order_equal_one_sketch() {
        // Parts with disjoint and overlapping spreads, so absorbing grows the window both ways.
        let ranges = [(0u64, 1u64), (5_000, 9_000), (1_000_000, 5_000_000_000), (10, 20_000), (0, u64::MAX)];
        let mut seed = 11u64;
        let mut whole = LatencySketch::default();
        let mut parts: Vec<SketchBuilder> = Vec::new();
        for (low, high) in ranges {
            let mut part = SketchBuilder::default();
            for _ in 0..1000 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = low + seed % (high - low).max(1);
                whole.add(v);
                part.add(v);
            }
            parts.push(part);
        }
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]] {
            let mut all = SketchBuilder::default();
            for i in order {
                all.absorb(parts[i].clone());
            }
            all.absorb(SketchBuilder::default());
            assert_eq!(all.build(), whole, "order {order:?}");
        }
    }

    #[test]
    fn builder_memory_is_bounded_by_the_spread_of_values_not_their_number() {
        // Five million latencies between 1 µs and 10 s: the builder holds one count per bucket
        // index in that spread however many values come.
        let (low, high) = (1_000u64, 10_000_000_000u64);
        let spread = (bucket_index(high) - bucket_index(low) + 1) as usize;
        let mut builder = SketchBuilder::default();
        let mut seed = 3u64;
        for n in 1..=5_000_000u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            builder.add(low + (seed >> 11) % (high - low + 1));
            if n.is_power_of_two() || n % 1_000_000 == 0 {
                assert!(builder.bucket_count() <= spread, "{} buckets after {n} values", builder.bucket_count());
                assert!(builder.counts.capacity() <= 2 * spread, "capacity {} after {n}", builder.counts.capacity());
                assert!(builder.staged.capacity() <= STAGED, "{} staged", builder.staged.capacity());
            }
        }
        let sketch = builder.build();
        assert_eq!(sketch.count(), 5_000_000);
        // The whole range of u64 fits in the documented bound too.
        let mut extremes = SketchBuilder::default();
        for v in [u64::MAX, 0, 1, u64::MAX / 2] {
            extremes.add(v);
        }
        extremes.count_staged();
        assert_eq!(extremes.bucket_count(), MAX_BUCKETS);
        assert_eq!(bucket_index(u64::MAX) as usize + 1, MAX_BUCKETS);
    }
}
