//! Group commit for stores that want few, large writes (ClickHouse: every insert makes a
//! part per table and day, and a server with many small parts throttles inserts). Appends
//! arriving together are joined into one append of the inner store; each caller returns
//! only once that append returned, with its result, so an acknowledgement still means the
//! store has the spans. The first caller of a batch waits up to `max_wait` for others (less
//! once `max_spans` are waiting), then writes for all of them.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use spindle_model::{DependencyLink, Span, SpanKind, TraceId};
use spindle_store::{
    MinuteBucket, Operation, RedBucket, RowFields, SpanFields, SpanRow, StoreError, TraceQuery, TraceStore,
};

/// One joined append: its result, once written, for every caller that added to it.
#[derive(Default)]
struct Batch {
    result: OnceLock<Result<(), String>>,
}

struct Filling {
    spans: Vec<Span>,
    batch: Arc<Batch>,
    /// Whether a caller is waiting to write the batch being filled.
    leader: bool,
}

/// A [`TraceStore`] whose appends are joined into batches; reads go straight through.
pub struct GroupCommit<S> {
    inner: S,
    max_spans: usize,
    max_wait: Duration,
    filling: Mutex<Filling>,
    changed: Condvar,
}

impl<S: TraceStore> GroupCommit<S> {
    pub fn new(inner: S, max_spans: usize, max_wait: Duration) -> Self {
        GroupCommit {
            inner,
            max_spans: max_spans.max(1),
            max_wait,
            filling: Mutex::new(Filling { spans: Vec::new(), batch: Arc::default(), leader: false }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Filling> {
        self.filling.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: TraceStore> TraceStore for GroupCommit<S> {
    fn append(&self, spans: Vec<Span>) -> Result<(), StoreError> {
        if spans.is_empty() {
            return Ok(());
        }
        let mut filling = self.lock();
        filling.spans.extend(spans);
        let batch = Arc::clone(&filling.batch);
        if filling.leader {
            if filling.spans.len() >= self.max_spans {
                self.changed.notify_all();
            }
            while batch.result.get().is_none() {
                filling = self.changed.wait(filling).unwrap_or_else(|e| e.into_inner());
            }
        } else {
            filling.leader = true;
            let deadline = Instant::now() + self.max_wait;
            while filling.spans.len() < self.max_spans {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                filling = self.changed.wait_timeout(filling, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            let spans = std::mem::take(&mut filling.spans);
            filling.batch = Arc::default();
            filling.leader = false;
            drop(filling);
            let result = self.inner.append(spans).map_err(|e| e.to_string());
            let _ = batch.result.set(result);
            self.changed.notify_all();
        }
        match batch.result.get() {
            Some(Ok(())) => Ok(()),
            Some(Err(message)) => Err(StoreError::Io {
                path: "the store (a joined append)".into(),
                source: std::io::Error::other(message.clone()),
            }),
            None => unreachable!("the result is set before any caller stops waiting for it"),
        }
    }

    fn get_trace(&self, trace_id: TraceId) -> Result<Vec<Span>, StoreError> {
        self.inner.get_trace(trace_id)
    }

    fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
        self.inner.find_trace_ids(query)
    }

    fn get_traces(&self, trace_ids: &[TraceId]) -> Result<Vec<Vec<Span>>, StoreError> {
        self.inner.get_traces(trace_ids)
    }

    fn services(&self) -> Result<Vec<String>, StoreError> {
        self.inner.services()
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
        self.inner.operations(service, kind)
    }

    fn operations_capped(&self, service: &str) -> Result<bool, StoreError> {
        self.inner.operations_capped(service)
    }

    fn dependencies(&self, start_unix_nano: u64, end_unix_nano: u64) -> Result<Vec<DependencyLink>, StoreError> {
        self.inner.dependencies(start_unix_nano, end_unix_nano)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }

    fn scan_spans(&self, query: &TraceQuery, visit: &mut dyn FnMut(&Span)) -> Result<(), StoreError> {
        self.inner.scan_spans(query, visit)
    }

    fn scan_fields(
        &self,
        query: &TraceQuery,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&Span),
    ) -> Result<(), StoreError> {
        self.inner.scan_fields(query, fields, visit)
    }

    fn scan_rows(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visit: &mut dyn FnMut(&SpanRow),
    ) -> Result<(), StoreError> {
        self.inner.scan_rows(query, fields, visit)
    }

    fn scan_rows_split(
        &self,
        query: &TraceQuery,
        fields: &RowFields,
        visitors: &mut [&mut (dyn FnMut(&SpanRow) + Send)],
    ) -> Result<(), StoreError> {
        self.inner.scan_rows_split(query, fields, visitors)
    }

    fn scan_traces(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        fields: &SpanFields,
        visit: &mut dyn FnMut(&[Span]),
    ) -> Result<(), StoreError> {
        self.inner.scan_traces(start_unix_nano, end_unix_nano, fields, visit)
    }

    fn red_buckets(
        &self,
        query: &TraceQuery,
        group_by: Option<&str>,
        step_nanos: u64,
        visit: &mut dyn FnMut(&RedBucket),
    ) -> Result<bool, StoreError> {
        self.inner.red_buckets(query, group_by, step_nanos, visit)
    }

    fn minute_buckets(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
        services: &[String],
        kinds: &[SpanKind],
    ) -> Result<Option<Vec<MinuteBucket>>, StoreError> {
        self.inner.minute_buckets(start_unix_nano, end_unix_nano, services, kinds)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use spindle_model::SpanId;

    use super::*;

    /// Records each append's size; fails appends while `failing` is set.
    #[derive(Default)]
    struct Log {
        appends: Mutex<Vec<usize>>,
        failing: std::sync::atomic::AtomicBool,
        stored: AtomicUsize,
    }

    /// Shared with the test, which looks inside while the group commit owns it.
    #[derive(Default, Clone)]
    struct Recording(Arc<Log>);

    impl std::ops::Deref for Recording {
        type Target = Log;
        fn deref(&self) -> &Log {
            &self.0
        }
    }

    impl TraceStore for Recording {
        fn append(&self, spans: Vec<Span>) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Closed);
            }
            self.appends.lock().unwrap().push(spans.len());
            self.stored.fetch_add(spans.len(), Ordering::SeqCst);
            Ok(())
        }
        fn get_trace(&self, _: TraceId) -> Result<Vec<Span>, StoreError> {
            Ok(Vec::new())
        }
        fn find_trace_ids(&self, _: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
            Ok(Vec::new())
        }
        fn services(&self) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
        fn operations(&self, _: &str, _: Option<SpanKind>) -> Result<Vec<Operation>, StoreError> {
            Ok(Vec::new())
        }
        fn dependencies(&self, _: u64, _: u64) -> Result<Vec<DependencyLink>, StoreError> {
            Ok(Vec::new())
        }
        fn sync(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn batch(n: usize) -> Vec<Span> {
        (0..n).map(|i| Span { span_id: SpanId(i as u64 + 1), ..Default::default() }).collect()
    }

    #[test]
    fn concurrent_appends_join_and_each_returns_after_the_write() {
        let inner = Recording::default();
        let store = Arc::new(GroupCommit::new(inner.clone(), 1_000, Duration::from_millis(300)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let inner = inner.clone();
                std::thread::spawn(move || {
                    store.append(batch(10)).unwrap();
                    // Returned: the spans are in the inner store.
                    assert!(inner.stored.load(Ordering::SeqCst) >= 10);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let appends = inner.appends.lock().unwrap().clone();
        assert_eq!(appends.iter().sum::<usize>(), 80, "every span written once: {appends:?}");
        assert!(appends.len() < 8, "appends arriving together were joined: {appends:?}");
    }

    #[test]
    fn a_full_batch_goes_without_waiting_and_errors_reach_every_caller() {
        let inner = Recording::default();
        let store = GroupCommit::new(inner.clone(), 5, Duration::from_secs(600));
        store.append(batch(7)).unwrap();
        assert_eq!(*inner.appends.lock().unwrap(), vec![7]);
        inner.failing.store(true, Ordering::SeqCst);
        let error = store.append(batch(9)).unwrap_err();
        assert!(error.to_string().contains("closed"), "{error}");
        inner.failing.store(false, Ordering::SeqCst);
        store.append(batch(5)).unwrap();
        assert_eq!(inner.stored.load(Ordering::SeqCst), 12, "the failed batch is not written");
    }
}
