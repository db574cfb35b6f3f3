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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use parking_lot::Mutex;

    /// Refuses for good any batch holding a request id that starts with
    /// "bad"; unavailable once `down_after` writes were made.
    struct Picky {
        writes: Mutex<Vec<usize>>,
        down_after: usize,
    }

    #[async_trait::async_trait]
    impl BatchTarget for Picky {
        async fn write(&self, batch: &[UsageEvent]) -> Result<Written, DeliveryError> {
            let mut writes = self.writes.lock();
            if writes.len() >= self.down_after {
                return Err(DeliveryError::transient("down"));
            }
            writes.push(batch.len());
            if batch.iter().any(|e| e.request_id.starts_with("bad")) {
                return Err(DeliveryError::permanent("refused"));
            }
            Ok(Written::Ledger(batch.len() as u64))
        }
    }

    fn events(ids: &[&str]) -> Vec<UsageEvent> {
        ids.iter()
            .map(|id| {
                serde_json::from_value(serde_json::json!({
                    "request_id": id, "ts": "2026-11-01T00:00:00Z", "customer_id": "c",
                    "key_id": "k", "plan_id": "p", "route": "r", "method": "GET", "status": 200,
                    "billable": true, "units": 1, "amount_micros": 0, "credits_micros": 0,
                    "period": "2026-11", "latency_us": 1
                }))
                .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn one_refused_event_costs_log2_writes_and_holds_back_nothing_else() {
        let target = Picky {
            writes: Mutex::new(Vec::new()),
            down_after: usize::MAX,
        };
        let mut ids: Vec<String> = (0..16).map(|i| format!("ok-{i}")).collect();
        ids[11] = "bad-11".into();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (mut landed, mut refused) = (0, Vec::new());
        let sent = send_isolating(
            &target,
            &events(&ids),
            16,
            &mut |w, _| {
                if let Written::Ledger(n) = w {
                    landed += n;
                }
            },
            &mut |e, _| refused.push(e.request_id.clone()),
        )
        .await;
        assert!(matches!(sent, Sent::All));
        assert_eq!((landed, refused), (15, vec!["bad-11".to_owned()]));
        // In order: 16 refused, [0..8) lands, [8..16) refused, [8..12)
        // refused, [8..10) lands, [10..12) refused, 10 lands, 11 refused
        // alone, [12..16) lands: log2(16) + 1 refused writes in all.
        assert_eq!(*target.writes.lock(), [16, 8, 8, 4, 2, 2, 1, 1, 4]);
    }

    #[tokio::test]
    async fn an_unavailable_target_leaves_the_unsent_suffix() {
        let target = Picky {
            writes: Mutex::new(Vec::new()),
            down_after: 2,
        };
        let ids: Vec<String> = (0..10).map(|i| format!("ok-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut landed = 0;
        let sent = send_isolating(
            &target,
            &events(&ids),
            4,
            &mut |_, n| landed += n,
            &mut |_, _| {},
        )
        .await;
        assert_eq!(landed, 8);
        assert!(matches!(
            sent,
            Sent::UnavailableFrom(8, DeliveryError::Transient(_))
        ));
    }
}
