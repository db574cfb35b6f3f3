//! The gateway's end of the pipeline.
//!
//! Emitting costs a push under a short lock and no thread wake-up per event:
//! waking another thread per call cost more than the rest of metering
//! together. The writer is woken when the buffer goes from empty to
//! non-empty and when a batch is full; otherwise `flush_interval` fills the
//! batch. When the buffer holds `buffer` events the gateway waits rather
//! than drops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use paygate_core::UsageEvent;
use paygate_metrics::Metrics;
use tokio::sync::{Notify, Semaphore};

use crate::{BatchTarget, UsageWriter};

/// How events are batched (the `[usage]` config section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Events the buffer holds before the gateway waits.
    pub buffer: usize,
    /// Events per write to the target.
    pub batch_size: usize,
    /// How long a batch may fill before it is written.
    pub flush_interval: Duration,
}

pub(crate) struct Shared {
    pub(crate) queue: Mutex<Vec<UsageEvent>>,
    pub(crate) wake: Notify,
    /// One permit per free buffer slot: the bound that makes the gateway wait.
    pub(crate) space: Semaphore,
    pub(crate) closed: AtomicBool,
    pub(crate) batch_size: usize,
}

/// Closes the pipeline when the last [`UsageSink`] clone is dropped.
struct SinkHandle(Arc<Shared>);

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

/// The gateway's end of the usage pipeline. Cheap to clone.
#[derive(Clone)]
pub struct UsageSink {
    handle: Arc<SinkHandle>,
    /// `paygate_usage_events_total{state="emitted"}`, resolved once.
    emitted: prometheus::IntCounter,
    backlog: prometheus::IntGauge,
}

impl UsageSink {
    /// Queues one event; waits when the buffer is full so no event is dropped.
    pub async fn emit(&self, event: UsageEvent) {
        let shared = &self.handle.0;
        self.emitted.inc();
        self.backlog.inc();
        let permit = match shared.space.try_acquire() {
            Ok(p) => Ok(p),
            Err(_) => shared.space.acquire().await,
        };
        match permit {
            Ok(p) => p.forget(),
            // The semaphore is never closed; should that change, say so loudly.
            Err(_) => tracing::error!("usage buffer closed; an event could not be queued"),
        }
        let len = {
            let mut q = shared.queue.lock();
            q.push(event);
            q.len()
        };
        if len == 1 || len == shared.batch_size {
            shared.wake.notify_one();
        }
    }
}

/// A connected sink/writer pair; run the writer on a runtime of its own
/// choosing (`tokio::spawn(writer.run())`).
pub fn pipeline(
    target: Arc<dyn BatchTarget>,
    metrics: Metrics,
    batching: Batching,
) -> (UsageSink, UsageWriter) {
    let batch_size = batching.batch_size.max(1);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::with_capacity(batch_size)),
        wake: Notify::new(),
        space: Semaphore::new(batching.buffer.max(batch_size)),
        closed: AtomicBool::new(false),
        batch_size,
    });
    let sink = UsageSink {
        handle: Arc::new(SinkHandle(Arc::clone(&shared))),
        emitted: metrics.usage_events.with_label_values(&["emitted"]),
        backlog: metrics.usage_backlog.clone(),
    };
    let writer = UsageWriter::new(shared, target, metrics, batching.flush_interval);
    (sink, writer)
}
