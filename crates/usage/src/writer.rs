//! The writer: drains the sink's buffer in batches into its target.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use paygate_core::UsageEvent;
use paygate_metrics::Metrics;

use crate::dead_letter::keep_dead_letters;
use crate::isolate::{send_isolating, Sent};
use crate::sink::Shared;
use crate::{BatchTarget, DeadLetter, DeadLetterFile, DeliveryError, SpillFile, Written};

/// Drains the buffer into its target until every sink is dropped.
pub struct UsageWriter {
    shared: Arc<Shared>,
    target: Arc<dyn BatchTarget>,
    metrics: Metrics,
    flush_interval: Duration,
    spill: Option<SpillFile>,
    dead_letters: Option<DeadLetterFile>,
}

/// How often a writer with spilled events tries to deliver them while idle.
const SPILL_RETRY: Duration = Duration::from_secs(1);

impl UsageWriter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        target: Arc<dyn BatchTarget>,
        metrics: Metrics,
        flush_interval: Duration,
    ) -> Self {
        Self {
            shared,
            target,
            metrics,
            flush_interval,
            spill: None,
            dead_letters: None,
        }
    }

    /// With a spill file, a batch the target cannot take now goes to the
    /// file and the gateway keeps serving; without one, the writer retries
    /// and the gateway waits once the buffer is full.
    pub fn with_spill(mut self, spill: SpillFile) -> Self {
        self.spill = Some(spill);
        self
    }

    /// Where events the target refuses for good are kept. Without a file
    /// they are written to the log at error level, the last place they exist.
    pub fn with_dead_letters(mut self, file: DeadLetterFile) -> Self {
        self.dead_letters = Some(file);
        self
    }

    pub async fn run(self) {
        let s = &self.shared;
        // Events spilled before a restart go first.
        self.drain_spill().await;
        loop {
            if s.queue.lock().is_empty() {
                if s.closed.load(Ordering::Acquire) {
                    return;
                }
                match &self.spill {
                    // Come back now and then to deliver the spill file.
                    Some(spill) if !spill.is_empty().await => {
                        tokio::select! {
                            () = tokio::time::sleep(SPILL_RETRY) => {}
                            () = s.wake.notified() => {}
                        }
                    }
                    _ => s.wake.notified().await,
                }
            }
            // Let the batch fill for one interval unless it is already full.
            if s.queue.lock().len() < s.batch_size && !s.closed.load(Ordering::Acquire) {
                tokio::select! {
                    () = tokio::time::sleep(self.flush_interval) => {}
                    () = s.wake.notified() => {}
                }
            }
            let events = std::mem::take(&mut *s.queue.lock());
            self.deliver(&events).await;
            s.space.add_permits(events.len());
            self.drain_spill().await;
        }
    }

    /// Sends `events` once, counting what landed and dead-lettering what the
    /// target refuses for good; on an unavailable target returns the events
    /// not sent.
    async fn send<'a>(
        &self,
        events: &'a [UsageEvent],
    ) -> Result<(), (&'a [UsageEvent], DeliveryError)> {
        let mut refused = Vec::new();
        let sent = send_isolating(
            self.target.as_ref(),
            events,
            self.shared.batch_size,
            &mut |w, n| self.count_written(w, n),
            &mut |e, why| refused.push(DeadLetter::event(e.clone(), why.to_string())),
        )
        .await;
        self.dead_letter(refused).await;
        match sent {
            Sent::All => Ok(()),
            Sent::UnavailableFrom(from, e) => Err((&events[from..], e)),
        }
    }

    /// Delivers a drained batch: retried until the target takes it, or
    /// spilled while the target is unavailable.
    async fn deliver(&self, events: &[UsageEvent]) {
        let mut rest = events;
        let mut backoff = Duration::from_millis(50);
        while let Err((unsent, e)) = self.send(rest).await {
            rest = unsent;
            if let Some(spill) = &self.spill {
                match spill.append(rest).await {
                    Ok(()) => {
                        tracing::warn!(error = %e, events = rest.len(), "usage target unavailable; events spilled to file");
                        return;
                    }
                    Err(io) => {
                        tracing::error!(error = %io, "usage spill file unwritable; retrying the target instead")
                    }
                }
            }
            tracing::warn!(error = %e, events = rest.len(), "usage write failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Delivers the spill file if there is one and the target takes it; what
    /// it does not take yet stays in the file.
    async fn drain_spill(&self) {
        let Some(spill) = &self.spill else {
            return;
        };
        if spill.is_empty().await {
            return;
        }
        let events = match spill.read_all().await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "usage spill file unreadable");
                return;
            }
        };
        let kept = match self.send(&events).await {
            Ok(()) => spill.clear().await,
            // Still down: keep what was not sent.
            Err((unsent, _)) if unsent.len() == events.len() => return,
            Err((unsent, _)) => spill.replace(unsent).await,
        };
        if let Err(e) = kept {
            tracing::error!(error = %e, "usage spill file not updated; its events will be sent again");
        }
        tracing::info!(events = events.len(), "spilled usage events delivered");
    }

    fn count_written(&self, written: Written, n: usize) {
        let n = n as u64;
        let events = &self.metrics.usage_events;
        match written {
            Written::Ledger(inserted) => {
                events.with_label_values(&["persisted"]).inc_by(inserted);
                events
                    .with_label_values(&["duplicate"])
                    .inc_by(n.saturating_sub(inserted));
            }
            Written::Streamed(sent) => {
                events.with_label_values(&["streamed"]).inc_by(sent);
            }
        }
        self.metrics.usage_backlog.sub(n as i64);
    }

    /// Events no retry will deliver leave the backlog once kept.
    async fn dead_letter(&self, letters: Vec<DeadLetter>) {
        keep_dead_letters(self.dead_letters.as_ref(), &letters, &self.metrics).await;
        self.metrics.usage_backlog.sub(letters.len() as i64);
    }
}
