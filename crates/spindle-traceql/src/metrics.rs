//! TraceQL metrics: functions over the spans a pipeline selects, by steps of time, then
//! second stages (`topk`, `bottomk`, comparisons) and arithmetic between queries.

use std::collections::{BTreeMap, HashMap};

use spindle_query::sketch::SketchBuilder;

use crate::ast::*;
use crate::eval::{eval_field, field_text, truthy, TraceView, Value};

/// The time range and step of a metrics query. Steps are aligned to multiples of `step`
/// since the epoch, so the same span falls in the same step in every query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub step_nanos: u64,
}

impl Window {
    fn first(&self) -> u64 {
        self.start_unix_nano / self.step_nanos
    }

    pub fn steps(&self) -> usize {
        let last = self.end_unix_nano.saturating_sub(1) / self.step_nanos;
        (last.saturating_sub(self.first()) + 1) as usize
    }

    /// The step a time falls in, when inside the window.
    pub fn index(&self, unix_nano: u64) -> Option<usize> {
        if unix_nano < self.start_unix_nano || unix_nano >= self.end_unix_nano {
            return None;
        }
        Some((unix_nano / self.step_nanos - self.first()) as usize)
    }

    /// The index of the step starting at `unix_nano` (a multiple of the step).
    pub fn step_at(&self, unix_nano: u64) -> Option<usize> {
        let i = (unix_nano / self.step_nanos).checked_sub(self.first())? as usize;
        (i < self.steps()).then_some(i)
    }

    /// The time a step's sample carries: the step's end, as Tempo's.
    pub fn timestamp_ms(&self, index: usize) -> u64 {
        (self.first() + index as u64 + 1) * self.step_nanos / 1_000_000
    }
}

/// One time series: labels and `(timestamp ms, value)` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, Static)>,
    pub samples: Vec<(u64, f64)>,
}

enum Acc {
    Count(Vec<u64>),
    Sum(Vec<f64>, Vec<u64>),
    Min(Vec<f64>),
    Max(Vec<f64>),
    Durations(Vec<Option<SketchBuilder>>),
    Values(Vec<Vec<f64>>),
    Histogram(BTreeMap<i64, Vec<u64>>),
}

/// Accumulates one [`MetricsQuery`]'s function over the spans it is shown.
pub struct Accumulator<'q> {
    query: &'q MetricsQuery,
    window: Window,
    groups: HashMap<Vec<Static>, Acc>,
    /// Series of `compare()`: (type, attribute, value) → counts per step.
    compare: HashMap<(bool, String, Static), Vec<u64>>,
    /// Distinct label sets kept apart; spans of further ones are left out.
    max_series: usize,
    pub truncated: bool,
}

/// A value as metrics read it: numbers, durations in seconds.
fn number_of(value: &Static) -> Option<f64> {
    match value {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        Static::Duration(d) => Some(*d as f64 / 1e9),
        _ => None,
    }
}

impl<'q> Accumulator<'q> {
    pub fn new(query: &'q MetricsQuery, window: Window, max_series: usize) -> Self {
        Accumulator { query, window, groups: HashMap::new(), compare: HashMap::new(), max_series, truncated: false }
    }

    fn new_acc(&self) -> Acc {
        let n = self.window.steps();
        match &self.query.function {
            MetricsFunction::Rate | MetricsFunction::CountOverTime | MetricsFunction::Compare { .. } => {
                Acc::Count(vec![0; n])
            }
            MetricsFunction::SumOverTime(_) | MetricsFunction::AvgOverTime(_) => Acc::Sum(vec![0.0; n], vec![0; n]),
            MetricsFunction::MinOverTime(_) => Acc::Min(vec![f64::NAN; n]),
            MetricsFunction::MaxOverTime(_) => Acc::Max(vec![f64::NAN; n]),
            MetricsFunction::QuantileOverTime(Field::Intrinsic(Intrinsic::Duration), _) => {
                Acc::Durations((0..n).map(|_| None).collect())
            }
            MetricsFunction::QuantileOverTime(..) => Acc::Values(vec![Vec::new(); n]),
            MetricsFunction::HistogramOverTime(_) => Acc::Histogram(BTreeMap::new()),
        }
    }

    /// Counts span `i` of `trace`, which the query's spanset pipeline selected.
    pub fn add(&mut self, i: usize, trace: &TraceView) {
        let span = &trace.spans[i];
        let Some(step) = self.window.index(span.start_time_unix_nano) else { return };
        if let MetricsFunction::Compare { selection, top: _, window } = &self.query.function {
            let in_window = window.is_none_or(|(s, e)| (s..e).contains(&span.start_time_unix_nano));
            let selected = in_window && truthy(&eval_field(selection, i, trace));
            self.add_compare(selected, i, trace, step);
            return;
        }
        let mut key = Vec::with_capacity(self.query.by.len());
        for field in &self.query.by {
            match group_value(field, i, trace) {
                Some(v) => key.push(v),
                // Spans without a by() value are left out of grouped metrics.
                None => return,
            }
        }
        let value = match &self.query.function {
            MetricsFunction::SumOverTime(f)
            | MetricsFunction::MinOverTime(f)
            | MetricsFunction::MaxOverTime(f)
            | MetricsFunction::AvgOverTime(f)
            | MetricsFunction::QuantileOverTime(f, _)
            | MetricsFunction::HistogramOverTime(f) => match eval_field(f, i, trace).single() {
                v @ (Static::Int(_) | Static::Float(_) | Static::Duration(_)) => Some(v),
                _ => return,
            },
            _ => None,
        };
        if !self.groups.contains_key(&key) {
            if self.groups.len() >= self.max_series {
                self.truncated = true;
                return;
            }
            let acc = self.new_acc();
            self.groups.insert(key.clone(), acc);
        }
        let Some(acc) = self.groups.get_mut(&key) else { return };
        let x = value.as_ref().and_then(number_of).unwrap_or(0.0);
        match acc {
            Acc::Count(c) => c[step] += 1,
            Acc::Sum(s, c) => {
                s[step] += x;
                c[step] += 1;
            }
            Acc::Min(m) => m[step] = if m[step].is_nan() { x } else { m[step].min(x) },
            Acc::Max(m) => m[step] = if m[step].is_nan() { x } else { m[step].max(x) },
            Acc::Durations(d) => {
                let nanos = match value {
                    Some(Static::Duration(n)) => n.max(0) as u64,
                    _ => 0,
                };
                d[step].get_or_insert_with(SketchBuilder::default).add(nanos);
            }
            Acc::Values(v) => v[step].push(x),
            Acc::Histogram(h) => {
                let bucket = histogram_bucket(value.as_ref());
                h.entry(bucket).or_insert_with(|| vec![0; self.window.steps()])[step] += 1;
            }
        }
    }

    fn add_compare(&mut self, selected: bool, i: usize, trace: &TraceView, step: usize) {
        let span = &trace.spans[i];
        let n = self.window.steps();
        let bump = |compare: &mut HashMap<(bool, String, Static), Vec<u64>>, name: String, value: Static| {
            compare.entry((selected, name, value)).or_insert_with(|| vec![0; n])[step] += 1;
        };
        for kv in &span.attributes {
            let value = crate::eval::static_of(&kv.value).single();
            bump(&mut self.compare, Attribute { scope: Scope::Span, name: kv.key.to_string() }.to_string(), value);
        }
        for kv in &span.resource.attributes {
            let value = crate::eval::static_of(&kv.value).single();
            bump(&mut self.compare, Attribute { scope: Scope::Resource, name: kv.key.to_string() }.to_string(), value);
        }
        for intrinsic in [Intrinsic::Name, Intrinsic::Status, Intrinsic::Kind] {
            let value = crate::eval::intrinsic_value(intrinsic, i, trace).single();
            bump(&mut self.compare, intrinsic.name().to_string(), value);
        }
    }

    /// The series, before second stages.
    pub fn finish(self) -> Vec<Series> {
        let window = self.window;
        let step_seconds = window.step_nanos as f64 / 1e9;
        let mut out = Vec::new();
        if let MetricsFunction::Compare { top, .. } = &self.query.function {
            return finish_compare(self.compare, *top, window);
        }
        let labels_of = |key: &[Static]| -> Vec<(String, Static)> {
            self.query.by.iter().zip(key).map(|(f, v)| (field_text(f), v.clone())).collect()
        };
        let points = |values: Vec<f64>| -> Vec<(u64, f64)> {
            values
                .into_iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, v)| (window.timestamp_ms(i), v))
                .collect()
        };
        for (key, acc) in self.groups {
            let labels = labels_of(&key);
            match acc {
                Acc::Count(c) => {
                    let rate = matches!(self.query.function, MetricsFunction::Rate);
                    let values = c.into_iter().map(|n| if rate { n as f64 / step_seconds } else { n as f64 }).collect();
                    out.push(Series { labels, samples: points(values) });
                }
                Acc::Sum(s, c) => {
                    let avg = matches!(self.query.function, MetricsFunction::AvgOverTime(_));
                    let values = s
                        .into_iter()
                        .zip(c)
                        .map(|(s, c)| {
                            if c == 0 {
                                f64::NAN
                            } else if avg {
                                s / c as f64
                            } else {
                                s
                            }
                        })
                        .collect();
                    out.push(Series { labels, samples: points(values) });
                }
                Acc::Min(m) | Acc::Max(m) => out.push(Series { labels, samples: points(m) }),
                Acc::Durations(d) => {
                    let MetricsFunction::QuantileOverTime(_, qs) = &self.query.function else { continue };
                    let sketches: Vec<_> = d.into_iter().map(|b| b.map(SketchBuilder::build)).collect();
                    for q in qs {
                        let values = sketches
                            .iter()
                            .map(|s| s.as_ref().and_then(|s| s.quantile(*q)).map_or(f64::NAN, |n| n / 1e9))
                            .collect();
                        out.push(Series {
                            labels: with_label(&labels, "p", Static::Float(*q)),
                            samples: points(values),
                        });
                    }
                }
                Acc::Values(v) => {
                    let MetricsFunction::QuantileOverTime(_, qs) = &self.query.function else { continue };
                    let sorted: Vec<Vec<f64>> = v
                        .into_iter()
                        .map(|mut xs| {
                            xs.sort_by(f64::total_cmp);
                            xs
                        })
                        .collect();
                    for q in qs {
                        let values = sorted.iter().map(|xs| exact_quantile(xs, *q)).collect();
                        out.push(Series {
                            labels: with_label(&labels, "p", Static::Float(*q)),
                            samples: points(values),
                        });
                    }
                }
                Acc::Histogram(h) => {
                    let seconds = matches!(
                        self.query.function,
                        MetricsFunction::HistogramOverTime(Field::Intrinsic(
                            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart
                        ))
                    );
                    for (bucket, counts) in h {
                        let bound = if seconds { 2f64.powi(bucket as i32) / 1e9 } else { 2f64.powi(bucket as i32) };
                        let values = counts.into_iter().map(|n| n as f64).collect();
                        out.push(Series {
                            labels: with_label(&labels, "__bucket", Static::Float(bound)),
                            samples: points(values),
                        });
                    }
                }
            }
        }
        sort_series(&mut out);
        out
    }
}

fn with_label(labels: &[(String, Static)], name: &str, value: Static) -> Vec<(String, Static)> {
    let mut out = labels.to_vec();
    out.push((name.to_string(), value));
    out
}

/// The power of two a histogram counts a value under: its upper bound's exponent.
/// Durations count in nanoseconds, like Tempo's log2 buckets.
fn histogram_bucket(value: Option<&Static>) -> i64 {
    let x = match value {
        Some(Static::Duration(d)) => *d as f64,
        Some(Static::Int(i)) => *i as f64,
        Some(Static::Float(f)) => *f,
        _ => 0.0,
    };
    if x <= 1.0 {
        0
    } else {
        x.log2().ceil() as i64
    }
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Series by the group value of `field` on span `i`: `None` leaves the span out.
pub fn group_value(field: &Field, i: usize, trace: &TraceView) -> Option<Static> {
    let value = match field {
        // A span attribute groups by the span's value, else its resource's (as RED does).
        Field::Attribute(Attribute { scope: Scope::Span, name }) => match eval_field(field, i, trace) {
            Value::One(Static::Nil) => {
                eval_field(&Field::Attribute(Attribute { scope: Scope::Resource, name: name.clone() }), i, trace)
            }
            other => other,
        },
        _ => eval_field(field, i, trace),
    };
    match value.single() {
        Static::Nil => None,
        v => Some(v),
    }
}

fn finish_compare(counts: HashMap<(bool, String, Static), Vec<u64>>, top: usize, window: Window) -> Vec<Series> {
    // Per (group, attribute): its values by total count, most first.
    // (selected, attribute) → (total, value, counts per step) of each value.
    type Values = Vec<(u64, Static, Vec<u64>)>;
    let mut by_attribute: BTreeMap<(bool, String), Values> = BTreeMap::new();
    for ((selected, name, value), steps) in counts {
        let total = steps.iter().sum();
        by_attribute.entry((selected, name)).or_default().push((total, value, steps));
    }
    let mut out = Vec::new();
    for ((selected, name), mut values) in by_attribute {
        let kind = Static::Str(if selected { "selection" } else { "baseline" }.into());
        values.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.to_string().cmp(&b.1.to_string())));
        if values.len() > top {
            values.truncate(top);
            out.push(Series {
                labels: vec![
                    ("__meta_error".into(), Static::Str("__too_many_values__".into())),
                    (name.clone(), Static::Nil),
                ],
                samples: Vec::new(),
            });
        }
        for (_, value, steps) in values {
            let samples = steps
                .into_iter()
                .enumerate()
                .filter(|(_, n)| *n > 0)
                .map(|(i, n)| (window.timestamp_ms(i), n as f64))
                .collect();
            out.push(Series { labels: vec![("__meta_type".into(), kind.clone()), (name.clone(), value)], samples });
        }
    }
    sort_series(&mut out);
    out
}

pub fn sort_series(series: &mut [Series]) {
    series.sort_by_key(|s| label_text(&s.labels));
}

/// Labels as Prometheus writes them: `{resource.service.name="pricing", p="0.99"}`.
pub fn label_text(labels: &[(String, Static)]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| match v {
            Static::Str(s) => format!("{k}=\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            other => format!("{k}=\"{other}\""),
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Applies second stages in order.
pub fn apply_stages(mut series: Vec<Series>, stages: &[SecondStage]) -> Vec<Series> {
    for stage in stages {
        series = match stage {
            SecondStage::TopK(k) => rank(series, *k, true),
            SecondStage::BottomK(k) => rank(series, *k, false),
            SecondStage::Filter(op, threshold) => series
                .into_iter()
                .filter_map(|mut s| {
                    s.samples.retain(|(_, v)| keep(*op, *v, *threshold));
                    (!s.samples.is_empty()).then_some(s)
                })
                .collect(),
        };
    }
    series
}

fn keep(op: BinaryOp, v: f64, t: f64) -> bool {
    match op {
        BinaryOp::Eq => v == t,
        BinaryOp::Ne => v != t,
        BinaryOp::Lt => v < t,
        BinaryOp::Le => v <= t,
        BinaryOp::Gt => v > t,
        BinaryOp::Ge => v >= t,
        _ => true,
    }
}

/// topk/bottomk at each timestamp: a series keeps the samples where it ranks in the `k`.
fn rank(series: Vec<Series>, k: usize, top: bool) -> Vec<Series> {
    let mut at: BTreeMap<u64, Vec<(f64, usize)>> = BTreeMap::new();
    for (i, s) in series.iter().enumerate() {
        for &(t, v) in &s.samples {
            at.entry(t).or_default().push((v, i));
        }
    }
    let mut kept: Vec<Vec<u64>> = vec![Vec::new(); series.len()];
    for (t, mut values) in at {
        values.sort_by(|a, b| if top { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) }.then(a.1.cmp(&b.1)));
        for (_, i) in values.into_iter().take(k) {
            kept[i].push(t);
        }
    }
    series
        .into_iter()
        .zip(kept)
        .filter_map(|(mut s, times)| {
            s.samples.retain(|(t, _)| times.binary_search(t).is_ok());
            (!s.samples.is_empty()).then_some(s)
        })
        .collect()
}

/// `lhs op rhs` between two answers: series matched by labels; a side with one unlabeled
/// series (or a number) applies to every series of the other.
pub fn combine(op: BinaryOp, lhs: Vec<Series>, rhs: Vec<Series>) -> Vec<Series> {
    let apply = |a: f64, b: f64| -> f64 {
        match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            _ if b == 0.0 => f64::NAN,
            _ => a / b,
        }
    };
    let broadcast = |s: &[Series]| s.len() == 1 && s[0].labels.is_empty();
    let join = |a: &Series, b: &Series, labels: Vec<(String, Static)>| -> Series {
        let other: HashMap<u64, f64> = b.samples.iter().copied().collect();
        let samples = a
            .samples
            .iter()
            .filter_map(|&(t, v)| other.get(&t).map(|&w| (t, apply(v, w))))
            .filter(|(_, v)| v.is_finite())
            .collect();
        Series { labels, samples }
    };
    let mut out = Vec::new();
    if broadcast(&rhs) {
        for a in &lhs {
            out.push(join(a, &rhs[0], a.labels.clone()));
        }
    } else if broadcast(&lhs) {
        for b in &rhs {
            // Keep the operand order: a is lhs.
            let flipped =
                join(&Series { labels: b.labels.clone(), samples: lhs[0].samples.clone() }, b, b.labels.clone());
            out.push(flipped);
        }
    } else {
        for a in &lhs {
            if let Some(b) = rhs.iter().find(|b| b.labels == a.labels) {
                out.push(join(a, b, a.labels.clone()));
            }
        }
    }
    out.retain(|s| !s.samples.is_empty());
    out
}

/// A number as a series over the window (one sample per step).
pub fn scalar_series(value: f64, window: Window) -> Vec<Series> {
    let samples = (0..window.steps()).map(|i| (window.timestamp_ms(i), value)).collect();
    vec![Series { labels: Vec::new(), samples }]
}
