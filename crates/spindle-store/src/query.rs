//! What a trace search asks for, how one span is tested against it, and how a running
//! query is stopped ([`QueryControl`]).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use spindle_model::{semconv, KeyValue, Span, SpanKind, StatusCode};

use crate::StoreError;

/// How a running query is stopped: its deadline, and a flag its caller sets when nobody
/// waits for the answer any more (the client disconnected). Scans call [`QueryControl::check`]
/// once per row group, so a query stops within one row group of either.
///
/// It travels inside [`TraceQuery`] so that the `TraceStore` trait keeps its signature;
/// calls that take no query (dependencies) see it through [`QueryControl::run`].
#[derive(Clone, Default)]
pub struct QueryControl {
    deadline: Option<Instant>,
    cancelled: Option<Arc<AtomicBool>>,
    /// Set by the query itself once it has read enough (a sample of tag names).
    enough: Option<Arc<AtomicBool>>,
}

thread_local! {
    static CURRENT: RefCell<QueryControl> = RefCell::new(QueryControl::default());
}

impl QueryControl {
    pub fn new(deadline: Option<Instant>, cancelled: Option<Arc<AtomicBool>>) -> Self {
        QueryControl { deadline, cancelled, enough: None }
    }

    /// This control, also stopping the query (as cancelled) once `enough` is set: for
    /// reads that want a sample, not every row.
    pub fn stopped_by(&self, enough: Arc<AtomicBool>) -> Self {
        QueryControl { enough: Some(enough), ..self.clone() }
    }

    /// `Err` once the query was cancelled or its deadline passed.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.cancelled.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
            || self.enough.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(StoreError::Cancelled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(StoreError::TimedOut);
        }
        Ok(())
    }

    /// Runs `f` with this control as the calling thread's current one, which
    /// [`QueryControl::check_current`] checks: for store calls that take no [`TraceQuery`].
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.replace(self.clone()));
        // Restored even if `f` unwinds: the thread (a pool's) runs other queries later.
        struct Restore(Option<QueryControl>);
        impl Drop for Restore {
            fn drop(&mut self) {
                if let Some(previous) = self.0.take() {
                    CURRENT.with(|c| *c.borrow_mut() = previous);
                }
            }
        }
        let _restore = Restore(Some(previous));
        f()
    }

    /// [`QueryControl::check`] of the control [`QueryControl::run`] set on this thread.
    pub fn check_current() -> Result<(), StoreError> {
        CURRENT.with(|c| c.borrow().check())
    }
}

impl std::fmt::Debug for QueryControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryControl").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

/// Two queries asking the same are equal whatever their deadlines.
impl PartialEq for QueryControl {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A search. Every filter applies to one span: a trace matches when one of its spans
/// matches all filters at once.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceQuery {
    /// `None` searches all services.
    pub service: Option<String>,
    pub operation: Option<String>,
    pub span_kind: Option<SpanKind>,
    /// The span's status code (TraceQL's `status = error`).
    pub status: Option<StatusCode>,
    /// `key=value` pairs; a pair matches a span attribute, a resource attribute, an event
    /// attribute, or one of the tags Jaeger derives from kind, status and scope.
    pub attributes: Vec<(String, String)>,
    pub start_time_min_unix_nano: u64,
    pub start_time_max_unix_nano: u64,
    pub duration_min_nanos: Option<u64>,
    pub duration_max_nanos: Option<u64>,
    pub limit: usize,
    /// When the query stops early; not part of what it asks.
    pub control: QueryControl,
}

impl Default for TraceQuery {
    fn default() -> Self {
        TraceQuery {
            service: None,
            operation: None,
            span_kind: None,
            status: None,
            attributes: Vec::new(),
            start_time_min_unix_nano: 0,
            start_time_max_unix_nano: u64::MAX,
            duration_min_nanos: None,
            duration_max_nanos: None,
            limit: 100,
            control: QueryControl::default(),
        }
    }
}

/// An operation of a service: span name and kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operation {
    pub name: String,
    pub kind: SpanKind,
}

fn any_matches(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes.iter().any(|kv| kv.key == key && kv.value.matches_text(value))
}

fn derived_tag_matches(span: &Span, key: &str, value: &str) -> bool {
    match key {
        semconv::JAEGER_SPAN_KIND => span.kind != SpanKind::Unspecified && span.kind.as_jaeger_str() == value,
        semconv::JAEGER_ERROR => span.is_error() && value == "true",
        semconv::JAEGER_STATUS_CODE => match span.status.code {
            StatusCode::Ok => value == "OK",
            StatusCode::Error => value == "ERROR",
            StatusCode::Unset => false,
        },
        semconv::JAEGER_STATUS_DESCRIPTION => !span.status.message.is_empty() && span.status.message == value,
        semconv::JAEGER_SCOPE_NAME => !span.scope.name.is_empty() && span.scope.name == value,
        semconv::JAEGER_SCOPE_VERSION => !span.scope.version.is_empty() && span.scope.version == value,
        _ => false,
    }
}

/// Whether `key=value` holds for a span, looking where Jaeger looks.
pub fn tag_matches(span: &Span, key: &str, value: &str) -> bool {
    any_matches(&span.attributes, key, value)
        || any_matches(&span.resource.attributes, key, value)
        || span
            .events
            .iter()
            .any(|e| any_matches(&e.attributes, key, value) || (key == semconv::JAEGER_EVENT && e.name == value))
        || derived_tag_matches(span, key, value)
}

impl TraceQuery {
    /// [`QueryControl::check`] of this query's control.
    pub fn check(&self) -> Result<(), StoreError> {
        self.control.check()
    }

    pub fn matches_span(&self, span: &Span) -> bool {
        if let Some(service) = &self.service {
            if span.service_name() != service {
                return false;
            }
        }
        if let Some(operation) = &self.operation {
            if span.name != operation {
                return false;
            }
        }
        if let Some(kind) = self.span_kind {
            if span.kind != kind {
                return false;
            }
        }
        if self.status.is_some_and(|status| span.status.code != status) {
            return false;
        }
        let start = span.start_time_unix_nano;
        if start < self.start_time_min_unix_nano || start > self.start_time_max_unix_nano {
            return false;
        }
        let duration = span.duration_nanos();
        if self.duration_min_nanos.is_some_and(|min| duration < min)
            || self.duration_max_nanos.is_some_and(|max| duration > max)
        {
            return false;
        }
        self.attributes.iter().all(|(k, v)| tag_matches(span, k, v))
    }
}
