//! Sending events so that a few bad ones cannot hold the rest back.

use paygate_core::UsageEvent;

use crate::{BatchTarget, DeliveryError, Written};

/// How far [`send_isolating`] got.
pub enum Sent {
    /// Every event was delivered or refused for good.
    All,
    /// The target became unavailable: `events[from..]` were not delivered
    /// (everything before was delivered or refused for good).
    UnavailableFrom(usize, DeliveryError),
}

/// Sends `events` in batches of `batch_size`. A batch the target refuses for
/// good is halved until the refused events are alone, so one event the
/// target cannot store costs about log2(batch) extra writes and keeps none
/// of its neighbours out; each event refused alone goes to `refused`.
/// Batches go in order, so an unavailable target leaves a suffix unsent.
pub async fn send_isolating(
    target: &dyn BatchTarget,
    events: &[UsageEvent],
    batch_size: usize,
    written: &mut (dyn FnMut(Written, usize) + Send),
    refused: &mut (dyn FnMut(&UsageEvent, &DeliveryError) + Send),
) -> Sent {
    let step = batch_size.max(1);
    let mut pending: Vec<(usize, usize)> = (0..events.len())
        .step_by(step)
        .map(|i| (i, (i + step).min(events.len())))
        .rev()
        .collect();
    while let Some((from, to)) = pending.pop() {
        match target.write(&events[from..to]).await {
            Ok(w) => written(w, to - from),
            Err(DeliveryError::Permanent(_)) if to - from > 1 => {
                let mid = from + (to - from) / 2;
                pending.push((mid, to));
                pending.push((from, mid));
            }
            Err(e @ DeliveryError::Permanent(_)) => refused(&events[from], &e),
            Err(e @ DeliveryError::Transient(_)) => return Sent::UnavailableFrom(from, e),
        }
    }
    Sent::All
}
