//! The embedded store: counters in process memory, one mutex per customer so
//! that concurrent calls of one customer are decided one at a time and calls of
//! different customers never wait on each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::gcra::{self, Gcra};
use crate::{
    Admission, Counters, Decision, Limits, PaymentClaim, Reservation, SeedMode, Snapshot, Store,
    StoreError, WebsocketSlot,
};
use paygate_core::Micros;

#[derive(Debug, Default)]
struct CustomerState {
    tat_ns: u64,
    period_start: i64,
    quota_used: u64,
    credits_micros: Micros,
    /// WebSocket leases: id → expiry on the store's clock (ns).
    websockets: HashMap<String, u64>,
    seeded: bool,
}

impl CustomerState {
    /// Quota used in `period_start`'s period; a newer period starts at zero.
    fn roll_period(&mut self, period_start: i64) {
        if period_start > self.period_start {
            self.period_start = period_start;
            self.quota_used = 0;
        }
    }

    fn snapshot(&self, now: u64, l: &Limits) -> Snapshot {
        let (rate_remaining, reset_ns) =
            gcra::state(self.tat_ns, now, l.emission_interval_ns, l.capacity);
        // A call dated in a newer period than the counter sees nothing used
        // yet; the counter itself moves on only when a call is admitted.
        let newer_period = l.quota.is_some_and(|q| q.period_start > self.period_start);
        Snapshot {
            rate_remaining,
            rate_reset_ms: reset_ns.div_ceil(1_000_000),
            quota_used: if newer_period { 0 } else { self.quota_used },
            credits_micros: self.credits_micros,
        }
    }

    fn admit(&mut self, now: u64, l: &Limits) -> Admission {
        if let Some(q) = l.quota {
            self.roll_period(q.period_start);
        }
        // No emission interval: units spent by an open connection, not a
        // call; the rate limit does not apply.
        let new_tat = if l.emission_interval_ns == 0 {
            self.tat_ns
        } else {
            match gcra::check(self.tat_ns, now, l.emission_interval_ns, l.capacity) {
                Gcra::Limited { retry_after_ns, .. } => {
                    return self.refuse(
                        now,
                        l,
                        Decision::RateLimited {
                            retry_after_ms: retry_after_ns.div_ceil(1_000_000),
                        },
                    )
                }
                Gcra::Conform { new_tat, .. } => new_tat,
            }
        };
        let mut r = Reservation::default();
        if let Some(q) = l.quota {
            let after = self.quota_used + l.units;
            let over = after.saturating_sub(q.limit.max(self.quota_used));
            match q.overage_price_micros {
                None if over > 0 => return self.refuse(now, l, Decision::QuotaExhausted),
                None => {}
                Some(price) => {
                    r.overage_units = over;
                    r.overage_micros = price.saturating_mul(over as Micros);
                }
            }
            r.quota_units = l.units;
            // The period the units are counted in: the counter's, which a
            // call from a gateway whose clock lags does not move back.
            r.period_start = self.period_start;
        }
        if let Some(price) = l.credit_price_micros {
            if self.credits_micros < price {
                return self.refuse(now, l, Decision::InsufficientCredits);
            }
            r.credits_micros = price;
        }
        // Every check passed: commit all of it.
        self.tat_ns = new_tat;
        self.quota_used += r.quota_units;
        self.credits_micros -= r.credits_micros;
        Admission {
            decision: Decision::Admitted(r),
            snapshot: self.snapshot(now, l),
        }
    }

    fn refuse(&self, now: u64, l: &Limits, decision: Decision) -> Admission {
        Admission {
            decision,
            snapshot: self.snapshot(now, l),
        }
    }
}

/// In-process [`Store`]; correct under concurrency within one node.
pub struct MemoryStore {
    epoch: Instant,
    customers: RwLock<HashMap<String, Arc<Mutex<CustomerState>>>>,
    /// x402 payment identities claimed, with their expiry.
    payments: Mutex<Claims>,
    /// The seeding marker (`Store::epoch`): lost only with the process.
    marker: Mutex<Option<String>>,
}

/// Claimed payment identities → expiry on the store's clock (ns). Expired
/// claims are swept when the map has grown to `sweep_at`, which then moves
/// to twice what is left: a sweep costs O(n) once per n claims, however
/// many claims are still live (a sweep at a fixed size would run on every
/// claim once that many were live).
struct Claims {
    expiry: HashMap<String, u64>,
    sweep_at: usize,
}

const CLAIMS_FIRST_SWEEP: usize = 10_000;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            customers: RwLock::new(HashMap::new()),
            payments: Mutex::new(Claims {
                expiry: HashMap::new(),
                sweep_at: CLAIMS_FIRST_SWEEP,
            }),
            marker: Mutex::new(None),
        }
    }

    fn now_ns(&self) -> u64 {
        // Offset by one day so a fresh bucket's zero TAT is long in the past.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 86_400_000_000_000
    }

    fn state(&self, customer: &str) -> Arc<Mutex<CustomerState>> {
        if let Some(s) = self.customers.read().get(customer) {
            return Arc::clone(s);
        }
        Arc::clone(
            self.customers
                .write()
                .entry(customer.to_string())
                .or_default(),
        )
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn admit(&self, customer: &str, limits: &Limits) -> Result<Admission, StoreError> {
        let now = self.now_ns();
        Ok(self.state(customer).lock().admit(now, limits))
    }

    async fn give_back(&self, customer: &str, r: &Reservation) -> Result<(), StoreError> {
        let state = self.state(customer);
        let mut s = state.lock();
        if r.quota_units > 0 && r.period_start == s.period_start {
            s.quota_used = s.quota_used.saturating_sub(r.quota_units);
        }
        s.credits_micros += r.credits_micros;
        Ok(())
    }

    async fn peek(&self, customer: &str, limits: &Limits) -> Result<Snapshot, StoreError> {
        let now = self.now_ns();
        Ok(self.state(customer).lock().snapshot(now, limits))
    }

    async fn add_credits(&self, customer: &str, micros: Micros) -> Result<Micros, StoreError> {
        let state = self.state(customer);
        let mut s = state.lock();
        s.credits_micros += micros;
        Ok(s.credits_micros)
    }

    async fn seed(&self, customer: &str, c: Counters, mode: SeedMode) -> Result<bool, StoreError> {
        let state = self.state(customer);
        let mut s = state.lock();
        if mode == SeedMode::IfAbsent && s.seeded {
            return Ok(false);
        }
        s.credits_micros = c.credits_micros;
        s.quota_used = c.quota_used;
        s.period_start = c.period_start;
        s.seeded = true;
        Ok(true)
    }

    async fn open_websocket(
        &self,
        customer: &str,
        lease: &str,
        max: u32,
        ttl_ms: u64,
    ) -> Result<WebsocketSlot, StoreError> {
        let now = self.now_ns();
        let state = self.state(customer);
        let mut s = state.lock();
        s.websockets.retain(|_, expiry| *expiry > now);
        if s.websockets.len() >= max as usize {
            return Ok(WebsocketSlot::Full);
        }
        s.websockets
            .insert(lease.to_owned(), now + ttl_ms * 1_000_000);
        Ok(WebsocketSlot::Granted)
    }

    async fn renew_websocket(
        &self,
        customer: &str,
        lease: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let now = self.now_ns();
        let state = self.state(customer);
        state
            .lock()
            .websockets
            .insert(lease.to_owned(), now + ttl_ms * 1_000_000);
        Ok(())
    }

    async fn close_websocket(&self, customer: &str, lease: &str) -> Result<(), StoreError> {
        let state = self.state(customer);
        state.lock().websockets.remove(lease);
        Ok(())
    }

    async fn websockets_open(&self, customer: &str) -> Result<u32, StoreError> {
        let now = self.now_ns();
        let state = self.state(customer);
        let mut s = state.lock();
        s.websockets.retain(|_, expiry| *expiry > now);
        Ok(u32::try_from(s.websockets.len()).unwrap_or(u32::MAX))
    }

    async fn claim_payment(&self, identity: &str, ttl_ms: u64) -> Result<PaymentClaim, StoreError> {
        let now = self.now_ns();
        let mut claims = self.payments.lock();
        if claims.expiry.get(identity).is_some_and(|e| *e > now) {
            return Ok(PaymentClaim::AlreadyClaimed);
        }
        if claims.expiry.len() >= claims.sweep_at {
            claims.expiry.retain(|_, e| *e > now);
            claims.sweep_at = (claims.expiry.len() * 2).max(CLAIMS_FIRST_SWEEP);
        }
        let expiry = now.saturating_add(ttl_ms.saturating_mul(1_000_000));
        claims.expiry.insert(identity.to_owned(), expiry);
        Ok(PaymentClaim::Claimed)
    }

    async fn release_payment(&self, identity: &str) -> Result<(), StoreError> {
        self.payments.lock().expiry.remove(identity);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn epoch(&self) -> Result<Option<String>, StoreError> {
        Ok(self.marker.lock().clone())
    }

    async fn mark_epoch(&self, candidate: &str) -> Result<(), StoreError> {
        self.marker
            .lock()
            .get_or_insert_with(|| candidate.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claims_are_swept_once_per_doubling_and_live_ones_kept() {
        let store = MemoryStore::new();
        // Claims that expire at once, then one live claim: the sweep at
        // 10,000 drops the expired ones.
        for i in 0..CLAIMS_FIRST_SWEEP {
            store.claim_payment(&format!("gone-{i}"), 0).await.unwrap();
        }
        store.claim_payment("live-0", 60_000).await.unwrap();
        assert_eq!(store.payments.lock().expiry.len(), 1);
        // 25,000 live claims: the threshold moves past them instead of
        // sweeping the whole map on every claim.
        for i in 1..25_000 {
            store
                .claim_payment(&format!("live-{i}"), 60_000)
                .await
                .unwrap();
        }
        let (len, sweep_at) = {
            let c = store.payments.lock();
            (c.expiry.len(), c.sweep_at)
        };
        assert_eq!(len, 25_000);
        assert!(
            sweep_at > len,
            "sweep_at {sweep_at} <= {len}: every claim would sweep"
        );
        for id in ["live-0", "live-12345", "live-24999"] {
            assert_eq!(
                store.claim_payment(id, 60_000).await.unwrap(),
                PaymentClaim::AlreadyClaimed
            );
        }
    }
}
