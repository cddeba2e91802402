//! Analytics over stored spans: RED statistics grouped by any attribute, slowest spans and
//! outliers, error groups, critical paths, trace comparison, Kafka hop latency and a
//! service graph with per-edge statistics.
//!
//! Everything here reads spans through `TraceStore::scan_fields`, asking only for the
//! attributes it groups or filters by (or whole traces where a
//! parent must be seen) and aggregates latencies in [`LatencySketch`]es, so memory stays
//! bounded by the number of groups, not spans, and percentiles carry the sketch's error.

use std::collections::{BTreeMap, HashMap};

use spindle_model::{for_each_edge_named, semconv, AttributeValue, BrokerNodes, Span, SpanId, SpanKind, TraceId};
use spindle_store::{RedBucket, RowFields, SpanFields, SpanRow, TraceQuery, GRAPH_KEYS, SCAN_THREADS};

use crate::sketch::{LatencySketch, SketchBuilder};
use crate::{QueryError, QueryService, Trace};

/// The hasher of the group index: group texts come from clients (a span name, an attribute
/// value), so the hash is keyed per process (aHash's random state), and nobody can send
/// texts that all collide; it stays about as fast as the unkeyed FNV it replaced.
type GroupHasher = ahash::RandomState;

/// Calls, errors and latency of one group over one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub calls: u64,
    pub errors: u64,
    pub latency: LatencySketch,
}

impl Stats {
    fn add(&mut self, span: &Span) {
        self.calls += 1;
        if span.is_error() {
            self.errors += 1;
        }
        self.latency.add(span.duration_nanos());
    }

    pub fn error_ratio(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

/// RED of one group: a series of `step`-long points and the total over the range.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    /// The attribute's value, as text; `None` when not grouped.
    pub group: Option<String>,
    pub total: Stats,
    /// Points keyed by their start (unix ns).
    pub series: BTreeMap<u64, Stats>,
}

/// Reads an attribute of the span, falling back to its resource; `service.name` and the
/// span's own name are addressable too.
pub fn attribute_text(span: &Span, key: &str) -> Option<String> {
    span.group_text(key).map(std::borrow::Cow::into_owned)
}

/// A span found by a latency query.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRef {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub service: String,
    pub operation: String,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub error: bool,
}

impl SpanRef {
    fn of(row: &SpanRow) -> Self {
        SpanRef {
            trace_id: row.trace_id,
            span_id: row.span_id,
            service: row.service.to_string(),
            operation: row.name.to_string(),
            start_unix_nano: row.start_unix_nano,
            duration_nanos: row.duration_nanos,
            error: row.error,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGroup {
    pub service: String,
    pub operation: String,
    /// `exception.type` of an event, else `error.type`, else the status message.
    pub error_type: String,
    pub count: u64,
    pub example_traces: Vec<TraceId>,
    pub last_seen_unix_nano: u64,
}

/// A stretch of the critical path: `span` was what the trace waited on in `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSegment {
    pub span_id: SpanId,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StructureDiff {
    /// `service:operation` from the root down, joined by ` > `.
    pub path: String,
    pub count_a: u64,
    pub count_b: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OperationDelta {
    pub service: String,
    pub operation: String,
    pub count_a: u64,
    pub count_b: u64,
    pub total_nanos_a: u64,
    pub total_nanos_b: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceComparison {
    pub structure: Vec<StructureDiff>,
    pub operations: Vec<OperationDelta>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphEdge {
    pub parent: String,
    pub child: String,
    pub stats: Stats,
}

/// Calls, errors and counted latencies of one group over one step.
#[derive(Default)]
struct RedPoint {
    calls: u64,
    errors: u64,
    latency: SketchBuilder,
}

impl RedPoint {
    fn absorb(&mut self, other: RedPoint) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.latency.absorb(other.latency);
    }
}

/// The points of one group: a vector indexed by step when the query's window holds few
/// steps (no tree walk per row), else a map.
enum Series {
    Dense(Vec<RedPoint>),
    Sparse(BTreeMap<u64, RedPoint>),
}

/// How points are laid out: `Some((first, count))` for dense series of `count` steps from
/// `first`.
#[derive(Clone, Copy)]
struct Steps {
    step: u64,
    dense: Option<(u64, usize)>,
}

/// Windows of at most this many steps get dense series.
const MAX_DENSE_STEPS: u64 = 256;

impl Steps {
    fn of(query: &TraceQuery, step: u64) -> Self {
        let (first, last) = (query.start_time_min_unix_nano / step, query.start_time_max_unix_nano / step);
        let dense = last.checked_sub(first).filter(|d| *d < MAX_DENSE_STEPS).map(|d| (first * step, d as usize + 1));
        Steps { step, dense }
    }

    fn new_series(&self) -> Series {
        match self.dense {
            Some((_, count)) => Series::Dense((0..count).map(|_| RedPoint::default()).collect()),
            None => Series::Sparse(BTreeMap::new()),
        }
    }
}

impl Series {
    fn point(&mut self, start: u64, steps: &Steps) -> &mut RedPoint {
        let at = start / steps.step * steps.step;
        match self {
            Series::Dense(points) => {
                let first = steps.dense.map_or(0, |(first, _)| first);
                // Rows are within the query's window; clamp anyway rather than index out.
                let i = (at.saturating_sub(first) / steps.step) as usize;
                let last = points.len() - 1;
                &mut points[i.min(last)]
            }
            Series::Sparse(points) => points.entry(at).or_default(),
        }
    }

    /// The points that counted a call, with their start.
    fn into_points(self, steps: &Steps) -> Vec<(u64, RedPoint)> {
        match self {
            Series::Dense(points) => {
                let first = steps.dense.map_or(0, |(first, _)| first);
                points
                    .into_iter()
                    .enumerate()
                    .filter(|(_, p)| p.calls > 0)
                    .map(|(i, p)| (first + i as u64 * steps.step, p))
                    .collect()
            }
            Series::Sparse(points) => points.into_iter().collect(),
        }
    }
}

/// A partial RED aggregate: groups by text, each a series of points. Group texts are
/// borrowed while scanning and a group's key is allocated once; latencies are counted per
/// point in bucket windows as they come (`SketchBuilder`); a group's total is the merge of
/// its points, which sketches make exact.
///
/// At most `capacity` groups are kept apart; rows of groups first seen after that go to
/// `overflow`, so memory is bounded by the capacity whatever the number of distinct texts.
struct RedAggregate {
    steps: Steps,
    grouped: bool,
    capacity: usize,
    index: HashMap<String, usize, GroupHasher>,
    groups: Vec<(String, Series)>,
    /// Rows of groups beyond `capacity`; `None` until one came.
    overflow: Option<Series>,
}

impl RedAggregate {
    fn new(steps: Steps, grouped: bool, capacity: usize) -> Self {
        RedAggregate {
            steps,
            grouped,
            capacity: capacity.max(1),
            index: HashMap::default(),
            groups: Vec::new(),
            overflow: None,
        }
    }

    /// Adds one row; grouped scans leave out rows without the group's value.
    fn add(&mut self, row: &SpanRow) {
        let steps = self.steps;
        let series = match (self.grouped, row.group.as_deref()) {
            (true, None) => return,
            (_, text) => self.series(text.unwrap_or_default()),
        };
        let point = series.point(row.start_unix_nano, &steps);
        point.calls += 1;
        point.errors += u64::from(row.error);
        point.latency.add(row.duration_nanos);
    }

    /// Adds one bucket of a store's own aggregation, like its spans row by row.
    fn add_bucket(&mut self, bucket: &RedBucket) {
        let steps = self.steps;
        let series = match (self.grouped, bucket.group.as_deref()) {
            (true, None) => return,
            (_, text) => self.series(text.unwrap_or_default()),
        };
        let point = series.point(bucket.start_unix_nano, &steps);
        point.calls += bucket.count;
        point.errors += if bucket.error { bucket.count } else { 0 };
        point.latency.add_bucket(bucket.bucket, bucket.count, bucket.sum_nanos, bucket.min_nanos, bucket.max_nanos);
    }

    /// The series of group `text`: its own while there is room, else the overflow.
    fn series(&mut self, text: &str) -> &mut Series {
        if let Some(&i) = self.index.get(text) {
            return &mut self.groups[i].1;
        }
        if self.groups.len() < self.capacity {
            self.index.insert(text.to_string(), self.groups.len());
            self.groups.push((text.to_string(), self.steps.new_series()));
            return &mut self.groups.last_mut().expect("just pushed").1;
        }
        let steps = self.steps;
        self.overflow.get_or_insert_with(|| steps.new_series())
    }

    /// Merges another partial aggregate of the same scan into this one.
    fn absorb(&mut self, other: RedAggregate) {
        let steps = self.steps;
        for (text, series) in other.groups {
            merge_series(self.series(&text), series, &steps);
        }
        if let Some(overflow) = other.overflow {
            merge_series(self.overflow.get_or_insert_with(|| steps.new_series()), overflow, &steps);
        }
    }

    /// The top `max_groups` groups' statistics by calls (sorted by text), and the rest
    /// merged into one, with how many groups that holds (not counting groups the capacity
    /// kept out, which are in it too). Sketches are built on every core.
    fn finish(self, max_groups: usize) -> (Vec<GroupStats>, Option<(GroupStats, usize)>) {
        let (steps, grouped) = (self.steps, self.grouped);
        let mut groups = self.groups;
        let mut overflow = self.overflow;
        let mut folded = 0;
        if groups.len() > max_groups {
            let calls = |s: &Series| -> u64 {
                match s {
                    Series::Dense(points) => points.iter().map(|p| p.calls).sum(),
                    Series::Sparse(points) => points.values().map(|p| p.calls).sum(),
                }
            };
            // Most calls first; ties by text, so the cut does not depend on scan order.
            let mut keyed: Vec<(u64, (String, Series))> = groups.into_iter().map(|g| (calls(&g.1), g)).collect();
            keyed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1 .0.cmp(&b.1 .0)));
            let rest = keyed.split_off(max_groups);
            folded = rest.len();
            let other = overflow.get_or_insert_with(|| steps.new_series());
            for (_, (_, series)) in rest {
                merge_series(other, series, &steps);
            }
            groups = keyed.into_iter().map(|(_, g)| g).collect();
        }
        let finish_group = |(text, series): (String, Series)| {
            let mut total = Stats::default();
            let points: BTreeMap<u64, Stats> = series
                .into_points(&steps)
                .into_iter()
                .map(|(at, p)| {
                    let stats = Stats { calls: p.calls, errors: p.errors, latency: p.latency.build() };
                    total.calls += stats.calls;
                    total.errors += stats.errors;
                    total.latency.merge(&stats.latency);
                    (at, stats)
                })
                .collect();
            GroupStats { group: grouped.then_some(text), total, series: points }
        };
        let second: Vec<(String, Series)> = groups.split_off(groups.len() / 2);
        let finished = std::thread::scope(|s| {
            let theirs = s.spawn(|| second.into_iter().map(finish_group).collect::<Vec<_>>());
            let mut mine: Vec<_> = groups.into_iter().map(finish_group).collect();
            mine.extend(theirs.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            mine
        });
        let other = overflow.map(|series| (finish_group((String::new(), series)), folded));
        (finished, other)
    }
}

/// Adds the points of `from` to `into`.
fn merge_series(into: &mut Series, from: Series, steps: &Steps) {
    match (into, from) {
        (Series::Dense(mine), Series::Dense(theirs)) => {
            mine.iter_mut().zip(theirs).for_each(|(m, t)| m.absorb(t));
        }
        (mine, theirs) => {
            for (at, point) in theirs.into_points(steps) {
                mine.point(at, steps).absorb(point);
            }
        }
    }
}

/// RED statistics of the top groups, and of the rest together.
#[derive(Debug, Clone, PartialEq)]
pub struct RedAnswer {
    /// At most the `max_groups` asked for, the groups with most calls, sorted by text.
    pub groups: Vec<GroupStats>,
    /// Every other group's rows merged (its `group` is empty); `None` when every group is
    /// in `groups`.
    pub other: Option<GroupStats>,
    /// Groups merged into `other` that the scan kept apart; groups first seen once
    /// [`TRACKED_GROUPS_PER_SHOWN`] times `max_groups` were kept went straight into
    /// `other`, uncounted, and then `other_uncounted` is true.
    pub other_groups: usize,
    pub other_uncounted: bool,
}

/// Groups a RED scan keeps apart, per group it answers: the top groups are exact when they
/// are among the first this many times `max_groups` distinct groups a scanning thread sees.
pub const TRACKED_GROUPS_PER_SHOWN: usize = 4;

impl QueryService {
    /// RED statistics of spans matching `query`, grouped by the value of `group_by`
    /// (spans without it are left out) or not grouped, in points of `step_nanos`.
    pub fn red(
        &self,
        query: &TraceQuery,
        group_by: Option<&str>,
        step_nanos: u64,
    ) -> Result<Vec<GroupStats>, QueryError> {
        Ok(self.red_top(query, group_by, step_nanos, usize::MAX)?.groups)
    }

    /// [`QueryService::red`] answering at most `max_groups` groups, those with most calls,
    /// and the rest merged into [`RedAnswer::other`]; memory stays bounded by `max_groups`
    /// however many distinct values the grouping key has.
    pub fn red_top(
        &self,
        query: &TraceQuery,
        group_by: Option<&str>,
        step_nanos: u64,
        max_groups: usize,
    ) -> Result<RedAnswer, QueryError> {
        let step = step_nanos.max(1);
        let max_groups = max_groups.max(1);
        // One partial aggregate per scanning thread, merged at the end: the aggregating
        // runs on every core, not on one thread behind the decoding ones.
        let steps = Steps::of(query, step);
        let grouped = group_by.is_some();
        let capacity = max_groups.saturating_mul(TRACKED_GROUPS_PER_SHOWN);
        let mut partials: Vec<RedAggregate> =
            (0..SCAN_THREADS).map(|_| RedAggregate::new(steps, grouped, capacity)).collect();
        let fields = RowFields { group_by: group_by.map(str::to_string), ..RowFields::default() };
        let computed = {
            let first = &mut partials[0];
            self.store.red_buckets(query, group_by, step, &mut |bucket| first.add_bucket(bucket))?
        };
        if !computed {
            let mut visitors: Vec<_> =
                partials.iter_mut().map(|partial| move |row: &SpanRow| partial.add(row)).collect();
            let mut refs: Vec<&mut (dyn FnMut(&SpanRow) + Send)> =
                visitors.iter_mut().map(|v| v as &mut (dyn FnMut(&SpanRow) + Send)).collect();
            self.store.scan_rows_split(query, &fields, &mut refs)?;
        }
        let mut all = partials.pop().unwrap_or_else(|| RedAggregate::new(steps, grouped, capacity));
        for partial in partials {
            all.absorb(partial);
        }
        let uncounted = all.overflow.is_some();
        let (mut groups, other) = all.finish(max_groups);
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        let (other, other_groups) = match other {
            Some((stats, folded)) => (Some(stats), folded),
            None => (None, 0),
        };
        Ok(RedAnswer { groups, other, other_groups, other_uncounted: uncounted })
    }

    /// The `limit` longest spans matching `query`, longest first.
    pub fn slowest(&self, query: &TraceQuery, limit: usize) -> Result<Vec<SpanRef>, QueryError> {
        let mut top: Vec<SpanRef> = Vec::new();
        self.store.scan_rows(query, &RowFields { ids: true, operation: true, ..RowFields::default() }, &mut |row| {
            let duration = row.duration_nanos;
            if top.len() < limit || top.last().is_some_and(|last| duration > last.duration_nanos) {
                let at = top.partition_point(|s| s.duration_nanos >= duration);
                top.insert(at, SpanRef::of(row));
                top.truncate(limit);
            }
        })?;
        Ok(top)
    }

    /// Spans matching `query` slower than its `quantile` (e.g. 0.99), slowest first, at
    /// most `limit`; also returns the threshold used (ns).
    pub fn outliers(&self, query: &TraceQuery, quantile: f64, limit: usize) -> Result<(u64, Vec<SpanRef>), QueryError> {
        let mut sketch = LatencySketch::default();
        self.store.scan_rows(query, &RowFields::default(), &mut |row| sketch.add(row.duration_nanos))?;
        let Some(threshold) = sketch.quantile(quantile) else { return Ok((0, Vec::new())) };
        let threshold = threshold as u64;
        let above = TraceQuery {
            duration_min_nanos: Some(threshold.saturating_add(1).max(query.duration_min_nanos.unwrap_or(0))),
            ..query.clone()
        };
        Ok((threshold, self.slowest(&above, limit)?))
    }

    /// Error spans matching `query`, grouped by service, operation and error type, the
    /// largest group first.
    pub fn error_groups(&self, query: &TraceQuery, examples: usize) -> Result<Vec<ErrorGroup>, QueryError> {
        let mut groups: HashMap<(String, String, String), ErrorGroup> = HashMap::new();
        let fields = SpanFields { attributes: Some(vec![semconv::ERROR_TYPE.to_string()]), events: true };
        self.store.scan_fields(query, &fields, &mut |span| {
            if !span.is_error() {
                return;
            }
            let error_type = span
                .events
                .iter()
                .find_map(|e| spindle_model::find_attribute(&e.attributes, semconv::EXCEPTION_TYPE))
                .or_else(|| span.attribute(semconv::ERROR_TYPE))
                .map(AttributeValue::to_display_string)
                .unwrap_or_else(|| span.status.message.clone());
            let key = (span.service_name().to_string(), span.name.to_string(), error_type);
            let group = groups.entry(key.clone()).or_insert_with(|| ErrorGroup {
                service: key.0,
                operation: key.1,
                error_type: key.2,
                count: 0,
                example_traces: Vec::new(),
                last_seen_unix_nano: 0,
            });
            group.count += 1;
            group.last_seen_unix_nano = group.last_seen_unix_nano.max(span.start_time_unix_nano);
            if group.example_traces.len() < examples && !group.example_traces.contains(&span.trace_id) {
                group.example_traces.push(span.trace_id);
            }
        })?;
        let mut out: Vec<ErrorGroup> = groups.into_values().collect();
        out.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
        });
        Ok(out)
    }

    /// Producer-end → consumer-start latency of Kafka hops whose consumer started in the
    /// query's window, per topic, in points of `step_nanos`. A `service` filter keeps hops
    /// where it is the producing or the consuming service; other span filters do not apply
    /// (a hop is a pair of spans, not one).
    pub fn kafka_hops(
        &self,
        query: &TraceQuery,
        step_nanos: u64,
    ) -> Result<BTreeMap<String, BTreeMap<u64, LatencySketch>>, QueryError> {
        let messaging =
            TraceQuery { service: None, operation: None, span_kind: None, attributes: vec![], ..query.clone() };
        let mut producers: HashMap<(TraceId, SpanId), (u64, String, String)> = HashMap::new();
        let mut consumers: Vec<(TraceId, SpanId, u64, Option<String>, String)> = Vec::new();
        let earlier = TraceQuery {
            // A producer may have ended a little before the window's consumers started.
            start_time_min_unix_nano: messaging.start_time_min_unix_nano.saturating_sub(600_000_000_000),
            ..messaging.clone()
        };
        let fields = SpanFields::with_attributes([semconv::MESSAGING_SYSTEM, semconv::MESSAGING_DESTINATION_NAME]);
        self.store.scan_fields(&earlier, &fields, &mut |span| {
            if span.attribute(semconv::MESSAGING_SYSTEM).and_then(AttributeValue::as_str) != Some("kafka") {
                return;
            }
            let topic = span.attribute(semconv::MESSAGING_DESTINATION_NAME).map(AttributeValue::to_display_string);
            match span.kind {
                SpanKind::Producer => {
                    producers.insert(
                        (span.trace_id, span.span_id),
                        (span.end_time_unix_nano, topic.unwrap_or_default(), span.service_name().to_string()),
                    );
                }
                SpanKind::Consumer if span.start_time_unix_nano >= messaging.start_time_min_unix_nano => {
                    consumers.push((
                        span.trace_id,
                        span.parent_span_id,
                        span.start_time_unix_nano,
                        topic,
                        span.service_name().to_string(),
                    ));
                }
                _ => {}
            }
        })?;
        let step = step_nanos.max(1);
        let mut out: BTreeMap<String, BTreeMap<u64, LatencySketch>> = BTreeMap::new();
        for (trace, parent, start, topic, consumer_service) in consumers {
            if let Some((end, producer_topic, producer_service)) = producers.get(&(trace, parent)) {
                if query.service.as_ref().is_some_and(|s| *s != consumer_service && s != producer_service) {
                    continue;
                }
                let topic = topic.unwrap_or_else(|| producer_topic.clone());
                out.entry(topic).or_default().entry(start / step * step).or_default().add(start.saturating_sub(*end));
            }
        }
        Ok(out)
    }

    /// The service graph of traces that started in the query's window, with calls, errors
    /// and latency per edge; virtual nodes for databases and one per Kafka topic
    /// (`kafka/market-data-raw`) included. Only the window of `query` applies.
    pub fn service_graph(&self, query: &TraceQuery) -> Result<Vec<GraphEdge>, QueryError> {
        let mut edges: BTreeMap<(String, String), Stats> = BTreeMap::new();
        let fields = SpanFields::with_attributes(GRAPH_KEYS);
        self.store.scan_traces(
            query.start_time_min_unix_nano,
            query.start_time_max_unix_nano,
            &fields,
            &mut |spans| {
                for_each_edge_named(spans, BrokerNodes::PerDestination, |parent, child, call| {
                    match edges.get_mut(&(parent.to_string(), child.to_string())) {
                        Some(stats) => stats.add(call),
                        None => edges.entry((parent.to_string(), child.to_string())).or_default().add(call),
                    }
                });
            },
        )?;
        Ok(edges.into_iter().map(|((parent, child), stats)| GraphEdge { parent, child, stats }).collect())
    }
}

/// The critical path of a trace: the chain of work that decided when it ended. Walking
/// back from the end, at each span the child whose subtree finished last is what was
/// waited for; before that child started, the span's own work (or an earlier child) was.
///
/// Children are not clipped to their parent's end: a Kafka consumer runs after its
/// producer span ended, and that work belongs on the path. A span's subtree reaches to
/// its latest descendant's end, and the path starts at the root whose subtree ends last.
/// The web UI computes the same path (`ui/src/model/critical-path.ts`).
pub fn critical_path(trace: &Trace) -> Vec<PathSegment> {
    let index: HashMap<SpanId, usize> = trace.spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); trace.spans.len()];
    let mut roots = Vec::new();
    for (i, span) in trace.spans.iter().enumerate() {
        match index.get(&span.parent_span_id) {
            Some(&p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    // Subtree ends, children before parents (an explicit post-order: no recursion, so
    // deep traces cannot overflow the stack; a cycle is visited once).
    let mut ends: Vec<u64> = trace.spans.iter().map(|s| s.end_time_unix_nano).collect();
    let mut order = Vec::with_capacity(trace.spans.len());
    let mut seen = vec![false; trace.spans.len()];
    let mut stack: Vec<usize> = roots.clone();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        order.push(i);
        stack.extend(children[i].iter().copied().filter(|c| !seen[*c]));
    }
    for &i in order.iter().rev() {
        for &c in &children[i] {
            ends[i] = ends[i].max(ends[c]);
        }
    }
    let Some(&root) = roots.iter().max_by_key(|&&r| (ends[r], std::cmp::Reverse(r))) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut visited = vec![false; trace.spans.len()];
    let mut work = vec![(root, ends[root])];
    while let Some((i, bound)) = work.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        let span = &trace.spans[i];
        let start = span.start_time_unix_nano;
        let mut cursor = bound;
        let mut kids = children[i].clone();
        kids.sort_by_key(|&c| std::cmp::Reverse(ends[c]));
        for c in kids {
            if cursor <= start {
                break;
            }
            let child = &trace.spans[c];
            // A child that started after the cursor ran while a later sibling was the bottleneck.
            if child.start_time_unix_nano >= cursor {
                continue;
            }
            let child_end = ends[c].min(cursor);
            if child_end < cursor {
                out.push(PathSegment { span_id: span.span_id, start_unix_nano: child_end, end_unix_nano: cursor });
            }
            work.push((c, child_end));
            cursor = child.start_time_unix_nano.max(start);
        }
        if cursor > start {
            out.push(PathSegment { span_id: span.span_id, start_unix_nano: start, end_unix_nano: cursor });
        }
    }
    out.sort_by_key(|s| s.start_unix_nano);
    out
}

fn paths(trace: &Trace) -> Vec<String> {
    let by_id: HashMap<SpanId, &Span> = trace.spans.iter().map(|s| (s.span_id, s)).collect();
    trace
        .spans
        .iter()
        .map(|span| {
            let mut parts = vec![format!("{}:{}", span.service_name(), span.name)];
            let mut cur = span;
            while let Some(parent) = by_id.get(&cur.parent_span_id) {
                if parts.len() > 1000 {
                    break;
                }
                parts.push(format!("{}:{}", parent.service_name(), parent.name));
                cur = parent;
            }
            parts.reverse();
            parts.join(" > ")
        })
        .collect()
}

/// Structure (paths present in one trace and not the other, or a different number of
/// times) and per-operation latency of two traces.
pub fn compare(a: &Trace, b: &Trace) -> TraceComparison {
    let mut structure: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in paths(a) {
        structure.entry(p).or_default().0 += 1;
    }
    for p in paths(b) {
        structure.entry(p).or_default().1 += 1;
    }
    let mut ops: BTreeMap<(String, String), OperationDelta> = BTreeMap::new();
    for (side, trace) in [(0, a), (1, b)] {
        for span in &trace.spans {
            let key = (span.service_name().to_string(), span.name.to_string());
            let d = ops.entry(key.clone()).or_insert_with(|| OperationDelta {
                service: key.0,
                operation: key.1,
                count_a: 0,
                count_b: 0,
                total_nanos_a: 0,
                total_nanos_b: 0,
            });
            if side == 0 {
                d.count_a += 1;
                d.total_nanos_a += span.duration_nanos();
            } else {
                d.count_b += 1;
                d.total_nanos_b += span.duration_nanos();
            }
        }
    }
    TraceComparison {
        structure: structure
            .into_iter()
            .map(|(path, (count_a, count_b))| StructureDiff { path, count_a, count_b })
            .collect(),
        operations: ops.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spindle_model::{KeyValue, Resource, Status, StatusCode};
    use spindle_store::{EmbeddedStore, StoreOptions, SyncPolicy, TraceStore};
    use spindle_workload::Workload;

    use super::*;
    use crate::sketch::{exact_quantile, RELATIVE_ERROR};

    fn service_with(seed: u64, traces: usize) -> (tempfile::TempDir, QueryService, Vec<Span>) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EmbeddedStore::open(StoreOptions { sync: SyncPolicy::Always, ..StoreOptions::new(dir.path()) }).unwrap();
        let spans = Workload::new(seed).batch(traces, 1_700_000_000_000_000_000, 3_600_000_000_000);
        // Some blocks and some spans in memory, so scans read both.
        for (i, chunk) in spans.chunks(1000).enumerate() {
            store.append(chunk.to_vec()).unwrap();
            if i % 2 == 0 {
                store.flush().unwrap();
            }
        }
        (dir, QueryService::new(Arc::new(store)), spans)
    }

    /// Property: for random workloads and filters, grouped RED equals brute force —
    /// counts exactly, percentiles within the sketch's documented error.
    /// The top groups by calls are exact while the distinct groups fit the tracked ones;
    /// every call lands in a shown group or in "other" whatever the number of groups.
    #[test]
    fn red_top_keeps_the_groups_with_most_calls_and_merges_the_rest() {
        let (_dir, query, spans) = service_with(3, 600);
        let all = TraceQuery { limit: usize::MAX, ..Default::default() };
        let mut calls: BTreeMap<String, u64> = BTreeMap::new();
        for s in &spans {
            *calls.entry(attribute_text(s, "span.name").unwrap()).or_default() += 1;
        }
        // More than 3 groups, and no more than the 4 x 3 a scan keeps apart: the exact regime.
        assert!((4..=TRACKED_GROUPS_PER_SHOWN * 3).contains(&calls.len()), "{} operations", calls.len());
        let mut by_calls: Vec<(u64, String)> = calls.iter().map(|(k, v)| (*v, k.clone())).collect();
        by_calls.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        // Within the tracked groups (4 x 3 >= the distinct names here): exact.
        let answer = query.red_top(&all, Some("span.name"), 600_000_000_000, 3).unwrap();
        let shown: Vec<String> = answer.groups.iter().map(|g| g.group.clone().unwrap()).collect();
        let mut expected: Vec<String> = by_calls.iter().take(3).map(|(_, k)| k.clone()).collect();
        expected.sort();
        assert_eq!(shown, expected);
        let other = answer.other.expect("more than 3 groups");
        let total: u64 = answer.groups.iter().map(|g| g.total.calls).sum::<u64>() + other.total.calls;
        assert_eq!(total, spans.len() as u64);
        assert_eq!(answer.other_groups, calls.len() - 3);
        // One group shown and tracked: whatever the first-seen order, the totals add up.
        let answer = query.red_top(&all, Some("span.name"), 600_000_000_000, 1).unwrap();
        assert_eq!(answer.groups.len(), 1);
        let total: u64 = answer.groups[0].total.calls + answer.other.as_ref().map_or(0, |o| o.total.calls);
        assert_eq!(total, spans.len() as u64);
        assert!(answer.other_uncounted || answer.other_groups == calls.len() - 1);
        // Fewer groups than the cap: no "other".
        let answer = query.red_top(&all, Some("span.name"), 600_000_000_000, 1000).unwrap();
        assert_eq!((answer.groups.len(), answer.other.is_none()), (calls.len(), true));
    }

    /// A scan whose deadline passed or whose caller went stops with an error, not an answer.
    #[test]
    fn a_cancelled_or_late_query_stops_with_an_error() {
        use spindle_store::{QueryControl, StoreError};
        use std::sync::atomic::AtomicBool;
        use std::time::Instant;
        let (_dir, query, _) = service_with(4, 400);
        let late = TraceQuery {
            limit: usize::MAX,
            control: QueryControl::new(Some(Instant::now()), None),
            ..Default::default()
        };
        assert!(matches!(
            query.red(&late, Some("span.name"), 60_000_000_000),
            Err(QueryError::Store(StoreError::TimedOut))
        ));
        assert!(matches!(query.find_traces(&late), Err(QueryError::Store(StoreError::TimedOut))));
        let gone = TraceQuery {
            limit: usize::MAX,
            control: QueryControl::new(None, Some(Arc::new(AtomicBool::new(true)))),
            ..Default::default()
        };
        assert!(matches!(query.slowest(&gone, 5), Err(QueryError::Store(StoreError::Cancelled))));
        // Dependencies take the thread's control.
        let control = QueryControl::new(Some(Instant::now()), None);
        let deps = control.run(|| query.dependencies(0, u64::MAX));
        assert!(matches!(deps, Err(QueryError::Store(StoreError::TimedOut))));
        assert!(query.dependencies(0, u64::MAX).is_ok(), "the control ends with `run`");
    }

    #[test]
    fn red_by_attribute_matches_brute_force() {
        for seed in 1..=6u64 {
            let (_dir, query, spans) = service_with(seed, 300 + seed as usize * 50);
            let operation = ["calculate_bsm", "GET /quote", "check_limits"][seed as usize % 3];
            let filter = TraceQuery { operation: Some(operation.into()), limit: usize::MAX, ..Default::default() };
            let groups = query.red(&filter, Some("user.tier"), 600_000_000_000).unwrap();
            let mut expected: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
            for s in spans.iter().filter(|s| s.name == operation) {
                expected.entry(attribute_text(s, "user.tier").unwrap()).or_default().push(s);
            }
            assert_eq!(groups.len(), expected.len(), "seed {seed}");
            for g in &groups {
                let members = &expected[g.group.as_ref().unwrap()];
                assert_eq!(g.total.calls, members.len() as u64);
                assert_eq!(g.total.errors, members.iter().filter(|s| s.is_error()).count() as u64);
                assert_eq!(g.series.values().map(|p| p.calls).sum::<u64>(), g.total.calls);
                let mut durations: Vec<u64> = members.iter().map(|s| s.duration_nanos()).collect();
                durations.sort_unstable();
                for q in [0.5, 0.9, 0.95, 0.99] {
                    let exact = exact_quantile(&durations, q).unwrap() as f64;
                    let got = g.total.latency.quantile(q).unwrap();
                    assert!(
                        (got - exact).abs() <= RELATIVE_ERROR * exact + 1e-6,
                        "seed {seed} q {q}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn slowest_outliers_and_error_groups_match_brute_force() {
        let (_dir, query, spans) = service_with(9, 400);
        let all = TraceQuery { service: Some("pricing".into()), limit: usize::MAX, ..Default::default() };
        let mut pricing: Vec<&Span> = spans.iter().filter(|s| s.service_name() == "pricing").collect();
        pricing.sort_by_key(|s| std::cmp::Reverse(s.duration_nanos()));
        let slowest = query.slowest(&all, 5).unwrap();
        let got: Vec<u64> = slowest.iter().map(|s| s.duration_nanos).collect();
        let want: Vec<u64> = pricing.iter().take(5).map(|s| s.duration_nanos()).collect();
        assert_eq!(got, want);

        let (threshold, outliers) = query.outliers(&all, 0.99, 1000).unwrap();
        assert!(!outliers.is_empty());
        assert!(outliers.iter().all(|o| o.duration_nanos > threshold));
        assert_eq!(outliers.len(), pricing.iter().filter(|s| s.duration_nanos() > threshold).count());

        let groups = query.error_groups(&TraceQuery { limit: usize::MAX, ..Default::default() }, 3).unwrap();
        let errors = spans.iter().filter(|s| s.is_error()).count() as u64;
        assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), errors);
        assert!(groups.windows(2).all(|w| w[0].count >= w[1].count));
        assert!(groups.iter().all(|g| !g.example_traces.is_empty() && g.example_traces.len() <= 3));
    }

    fn span(id: u64, parent: u64, service: &str, start: u64, end: u64) -> Span {
        Span {
            trace_id: TraceId(1),
            span_id: SpanId(id),
            parent_span_id: SpanId(parent),
            name: format!("op{id}").into(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::string("service.name", service)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn critical_path_follows_the_last_finishing_child() {
        // root 0..100; A 10..40; B 30..90 with child C 35..95 (ends after B: clipped).
        let trace = crate::assemble(
            TraceId(1),
            vec![span(1, 0, "s", 0, 100), span(2, 1, "s", 10, 40), span(3, 1, "s", 30, 90), span(4, 3, "s", 35, 95)],
        );
        let path: Vec<(u64, u64, u64)> =
            critical_path(&trace).iter().map(|p| (p.span_id.0, p.start_unix_nano, p.end_unix_nano)).collect();
        assert_eq!(path, vec![(1, 0, 10), (2, 10, 30), (3, 30, 35), (4, 35, 95), (1, 95, 100)]);
        let total: u64 = critical_path(&trace).iter().map(|p| p.end_unix_nano - p.start_unix_nano).sum();
        assert_eq!(total, 100, "the path covers the root exactly once");
    }

    #[test]
    fn critical_path_follows_kafka_consumers_past_the_producer_end() {
        // producer 10..20 under root 0..25; its consumer 40..90 runs after both ended.
        let trace = crate::assemble(
            TraceId(1),
            vec![span(1, 0, "ingest", 0, 25), span(2, 1, "ingest", 10, 20), span(3, 2, "proc", 40, 90)],
        );
        let path: Vec<(u64, u64, u64)> =
            critical_path(&trace).iter().map(|p| (p.span_id.0, p.start_unix_nano, p.end_unix_nano)).collect();
        assert_eq!(path, vec![(1, 0, 10), (2, 10, 40), (3, 40, 90)]);
    }

    #[test]
    fn comparison_reports_structure_and_latency_deltas() {
        let a = crate::assemble(TraceId(1), vec![span(1, 0, "api", 0, 100), span(2, 1, "db", 10, 40)]);
        let b = crate::assemble(
            TraceId(2),
            vec![span(1, 0, "api", 0, 300), span(2, 1, "db", 10, 200), span(5, 1, "cache", 5, 8)],
        );
        let c = compare(&a, &b);
        let only_b: Vec<&StructureDiff> = c.structure.iter().filter(|d| d.count_a == 0).collect();
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].path, "api:op1 > cache:op5");
        let db = c.operations.iter().find(|o| o.service == "db").unwrap();
        assert_eq!((db.total_nanos_a, db.total_nanos_b), (30, 190));
    }

    #[test]
    fn kafka_hops_and_graph_edges() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EmbeddedStore::open(StoreOptions { sync: SyncPolicy::Always, ..StoreOptions::new(dir.path()) }).unwrap();
        let kafka = |mut s: Span, kind: SpanKind| {
            s.kind = kind;
            s.attributes = vec![
                KeyValue::string("messaging.system", "kafka"),
                KeyValue::string("messaging.destination.name", "ticks"),
            ];
            s
        };
        let mut db = span(4, 3, "storage", 1_000_050, 1_000_090);
        db.kind = SpanKind::Client;
        db.attributes = vec![KeyValue::string("db.system", "postgresql")];
        db.status = Status { code: StatusCode::Error, message: "deadlock".into() };
        store
            .append(vec![
                span(1, 0, "ingestion", 1_000_000, 1_000_020),
                kafka(span(2, 1, "ingestion", 1_000_005, 1_000_010), SpanKind::Producer),
                kafka(span(3, 2, "storage", 1_000_040, 1_000_100), SpanKind::Consumer),
                db,
            ])
            .unwrap();
        let query = QueryService::new(Arc::new(store));
        let hops = query.kafka_hops(&TraceQuery::default(), 1_000_000_000).unwrap();
        let sketch = hops["ticks"].values().next().unwrap();
        assert_eq!((sketch.count(), sketch.max()), (1, 30));
        let graph = query.service_graph(&TraceQuery::default()).unwrap();
        let edges: Vec<(&str, &str, u64, u64)> =
            graph.iter().map(|e| (e.parent.as_str(), e.child.as_str(), e.stats.calls, e.stats.errors)).collect();
        assert_eq!(
            edges,
            vec![("ingestion", "kafka/ticks", 1, 0), ("kafka/ticks", "storage", 1, 0), ("storage", "postgresql", 1, 1)]
        );
    }
}
