//! An open WebSocket (SPEC §9): its lease on a `max_websockets` slot, renewed
//! while it lives, and its units: `ws_message_cost` per data message the
//! upstream sends and `ws_minute_cost` per started minute after the first.
//!
//! Units are reserved from the store in batches ahead of use (one store call
//! per batch, not per message), consumed locally, and what is left is given
//! back at close, so the ledger holds exactly what the client received. The
//! body filter that counts messages is synchronous (Pingora calls it between
//! reads), so store calls run on the background runtime: a refill starts when
//! half a batch is left, and a message that finds the budget empty waits for
//! it (bounded). A message that cannot be paid is not delivered: the client
//! gets a close frame (1008 and the reason) in its place, after the last
//! paid message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use paygate_core::metering::spend_limits;
use paygate_core::{ErrorCode, UsageEvent};
use paygate_store::{Decision, Principal, Reservation};
use paygate_usage::UsageSink;
use tokio::runtime::Handle;

use crate::store::StoreHandle;
use crate::ws_frames::{close_frame, FrameReader};

/// A lease is renewed this often; it lives
/// [`paygate_store::WEBSOCKET_LEASE_MS`].
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Messages a batch of units pays for.
const BATCH_MESSAGES: u64 = 16;

/// Why the gateway closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Quota or credits ran out: 1008 and `quota_exhausted` /
    /// `insufficient_credits`.
    Unpaid(ErrorCode),
    /// The store could not say in time: 1013 (try again later).
    Unavailable,
}

impl CloseReason {
    fn frame(self) -> Vec<u8> {
        match self {
            Self::Unpaid(code) => close_frame(1008, code.as_str()),
            Self::Unavailable => close_frame(1013, ErrorCode::LimiterUnavailable.as_str()),
        }
    }
}

/// What asking the budget for units gave.
enum Taken {
    Paid,
    Refused(CloseReason),
    /// A refill is under way.
    Wait,
}

#[derive(Debug)]
struct Batch {
    r: Reservation,
    units: u64,
    used: u64,
    period: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refill {
    Idle,
    InFlight,
    /// Even the smallest charge was refused.
    Exhausted(ErrorCode),
    Failed,
}

/// Units consumed from one reservation, to become a usage event.
#[derive(Debug)]
struct Spent {
    seq: u32,
    r: Reservation,
    units: u64,
    period: String,
}

#[derive(Debug)]
struct State {
    batches: VecDeque<Batch>,
    available: u64,
    refill: Refill,
    spent: Vec<Spent>,
    seq: u32,
    minutes_charged: u64,
    close: Option<CloseReason>,
    close_sent: bool,
    /// `finish` has settled the batches: a refill that lands later gives
    /// its units straight back.
    finished: bool,
}

impl State {
    fn new() -> Self {
        Self {
            batches: VecDeque::new(),
            available: 0,
            refill: Refill::Idle,
            spent: Vec::new(),
            seq: 0,
            minutes_charged: 0,
            close: None,
            close_sent: false,
            finished: false,
        }
    }
}

/// The connection's identity and what it is charged.
pub struct Terms {
    pub principal: Principal,
    /// The upgrade's request id: the lease id and the prefix of the
    /// connection's usage events (`<request_id>-<n>`).
    pub request_id: String,
    pub route: Arc<str>,
    pub message_cost: u64,
    pub minute_cost: u64,
}

/// Where the connection's store calls and usage events go.
pub struct Services {
    /// Failures are counted in `paygate_store_errors_total` there.
    pub store: StoreHandle,
    pub usage: UsageSink,
    /// The background runtime: store calls the body filter cannot await.
    pub background: Handle,
    /// How long a message waits for a refill before the connection closes.
    pub wait: Duration,
}

pub struct WsConnection {
    terms: Terms,
    svc: Services,
    opened: Instant,
    batch_units: u64,
    min_charge: u64,
    state: parking_lot::Mutex<State>,
    refilled: parking_lot::Condvar,
    /// Ends the ticker at its next sleep. Not an abort: a ticker cut off
    /// while it hands spent units to the usage pipeline would lose them.
    stop: tokio::sync::Notify,
}

impl WsConnection {
    /// Starts the lease renewal (and minute charges) of an upgraded call.
    pub fn open(terms: Terms, svc: Services) -> Arc<Self> {
        Self::opened_at(terms, svc, Instant::now())
    }

    /// `opened` is when the connection's minutes start counting (earlier
    /// than now only in tests of minute charges).
    fn opened_at(terms: Terms, svc: Services, opened: Instant) -> Arc<Self> {
        let (message, minute) = (terms.message_cost, terms.minute_cost);
        let min_charge = [message, minute]
            .into_iter()
            .filter(|c| *c > 0)
            .min()
            .unwrap_or(0);
        let conn = Arc::new(Self {
            batch_units: if message > 0 {
                message * BATCH_MESSAGES
            } else {
                minute
            },
            min_charge,
            terms,
            opened,
            state: parking_lot::Mutex::new(State::new()),
            refilled: parking_lot::Condvar::new(),
            stop: tokio::sync::Notify::new(),
            svc,
        });
        conn.svc.background.spawn(Arc::clone(&conn).tick());
        if message > 0 {
            // The first batch is on its way before the first message, so the
            // body filter rarely has to wait for the store.
            conn.start_refill(&mut conn.state.lock());
        }
        conn
    }

    /// Reads the upstream's bytes on their way to the client: charges each
    /// message that starts in them and, when one cannot be paid, delivers
    /// what was paid for and then the close frame instead. After the close
    /// frame nothing more is delivered; the client's close reply, forwarded
    /// upstream, ends the connection (ending it here at once could cut off
    /// the close frame and paid messages still in the write buffer).
    pub fn upstream_bytes(self: &Arc<Self>, reader: &mut FrameReader, body: &mut Option<Bytes>) {
        let mut st = self.state.lock();
        if st.close_sent {
            if body.is_some() {
                *body = Some(Bytes::new());
            }
            return;
        }
        if let Some(reason) = st.close {
            // A minute could not be paid: nothing more is delivered.
            st.close_sent = true;
            *body = Some(Bytes::from(reason.frame()));
            return;
        }
        let Some(data) = body.as_ref() else {
            return;
        };
        let mut starts = Vec::new();
        reader.feed(data, &mut starts);
        let cost = self.terms.message_cost;
        if cost == 0 {
            return;
        }
        for offset in starts {
            if let Err(reason) = self.pay(&mut st, cost) {
                st.close = Some(reason);
                st.close_sent = true;
                let mut out = BytesMut::from(&data[..offset]);
                out.extend_from_slice(&reason.frame());
                *body = Some(out.freeze());
                return;
            }
        }
        if st.available < self.batch_units / 2 && st.refill == Refill::Idle {
            self.start_refill(&mut st);
        }
    }

    /// Takes `units` from the budget if it holds them; otherwise says
    /// whether a refill is worth waiting for (starting one if none runs).
    /// Refills always run as tasks of their own: whoever waits may give up,
    /// and a store call cut in half could leave units reserved that nobody
    /// holds.
    fn take(self: &Arc<Self>, st: &mut State, units: u64) -> Taken {
        if st.available >= units {
            consume(st, units);
            return Taken::Paid;
        }
        match st.refill {
            Refill::Exhausted(code) => Taken::Refused(CloseReason::Unpaid(code)),
            Refill::Failed => Taken::Refused(CloseReason::Unavailable),
            Refill::Idle => {
                self.start_refill(st);
                Taken::Wait
            }
            Refill::InFlight => Taken::Wait,
        }
    }

    /// Takes `units` from the budget on the body filter's thread, blocking
    /// (bounded) for a refill when it is short.
    fn pay(
        self: &Arc<Self>,
        st: &mut parking_lot::MutexGuard<'_, State>,
        units: u64,
    ) -> Result<(), CloseReason> {
        loop {
            match self.take(st, units) {
                Taken::Paid => return Ok(()),
                Taken::Refused(reason) => return Err(reason),
                Taken::Wait => {}
            }
            if self.refilled.wait_for(st, self.svc.wait).timed_out() {
                return Err(CloseReason::Unavailable);
            }
        }
    }

    fn start_refill(self: &Arc<Self>, st: &mut State) {
        st.refill = Refill::InFlight;
        self.svc.background.spawn(Arc::clone(self).refill());
    }

    /// Reserves the next batch (smaller ones near the limits, down to one
    /// charge), then wakes whoever waits and sends out spent units.
    async fn refill(self: Arc<Self>) {
        let customer = self.terms.principal.customer.id.as_str().to_owned();
        let mut units = self.batch_units.max(self.min_charge);
        let outcome = loop {
            let p = &self.terms.principal;
            let (limits, period) = spend_limits(&p.plan, units, &p.customer, Utc::now());
            let period = period.name();
            let refused = match self.svc.store.admit(&customer, &limits).await {
                Ok(a) => match a.decision {
                    Decision::Admitted(r) => {
                        break Ok(Batch {
                            r,
                            units,
                            used: 0,
                            period,
                        })
                    }
                    Decision::QuotaExhausted => ErrorCode::QuotaExhausted,
                    Decision::InsufficientCredits => ErrorCode::InsufficientCredits,
                    Decision::RateLimited { .. } => break Err(Refill::Failed),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "WebSocket units not reserved");
                    break Err(Refill::Failed);
                }
            };
            if units <= self.min_charge {
                break Err(Refill::Exhausted(refused));
            }
            units = (units / 2).max(self.min_charge);
        };
        let (spent, late) = {
            let mut st = self.state.lock();
            let late = match outcome {
                Ok(batch) if st.finished => Some(batch.r),
                Ok(batch) => {
                    st.available += batch.units;
                    st.batches.push_back(batch);
                    st.refill = Refill::Idle;
                    None
                }
                Err(r) => {
                    st.refill = r;
                    None
                }
            };
            (std::mem::take(&mut st.spent), late)
        };
        self.refilled.notify_all();
        if let Some(r) = late {
            self.give_back(&r).await;
        }
        self.emit(spent).await;
    }

    /// Takes `units` from the budget off the body filter's thread, polling
    /// (bounded) for a refill when it is short.
    async fn charge(self: &Arc<Self>, units: u64) -> Result<(), CloseReason> {
        let deadline = Instant::now() + self.svc.wait;
        loop {
            let taken = self.take(&mut self.state.lock(), units);
            match taken {
                Taken::Paid => return Ok(()),
                Taken::Refused(reason) => return Err(reason),
                Taken::Wait => {}
            }
            if Instant::now() > deadline {
                return Err(CloseReason::Unavailable);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Minutes started after the first that are not charged yet.
    fn minutes_due(&self) -> u64 {
        let started = self.opened.elapsed().as_secs() / 60;
        started.saturating_sub(self.state.lock().minutes_charged)
    }

    async fn charge_minutes(self: &Arc<Self>) -> Result<(), CloseReason> {
        if self.terms.minute_cost == 0 {
            return Ok(());
        }
        for _ in 0..self.minutes_due() {
            self.charge(self.terms.minute_cost).await?;
            self.state.lock().minutes_charged += 1;
        }
        Ok(())
    }

    /// Renews the lease and charges minutes as they start, until `stop`.
    async fn tick(self: Arc<Self>) {
        let customer = self.terms.principal.customer.id.as_str().to_owned();
        loop {
            let into_minute = self.opened.elapsed().as_millis() % 60_000;
            let to_next_minute = Duration::from_millis(60_000 - into_minute as u64);
            tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY.min(to_next_minute)) => {}
                () = self.stop.notified() => return,
            }
            if let Err(e) = self
                .svc
                .store
                .renew_websocket(&customer, &self.terms.request_id)
                .await
            {
                tracing::warn!(error = %e, "WebSocket lease not renewed");
            }
            if self.state.lock().close.is_none() {
                if let Err(reason) = self.charge_minutes().await {
                    self.state.lock().close = Some(reason);
                }
            }
            let spent = std::mem::take(&mut self.state.lock().spent);
            self.emit(spent).await;
        }
    }

    /// The connection ended: stops the ticker, charges the minutes started
    /// since its last round, records what was spent and gives back what was
    /// not. (The lease itself is closed by the caller, like a refused
    /// upgrade's.)
    pub async fn finish(self: &Arc<Self>) {
        self.stop.notify_one();
        if self.state.lock().close.is_none() {
            if let Err(reason) = self.charge_minutes().await {
                tracing::info!(?reason, "last WebSocket minute not charged");
            }
        }
        // A refill under way lands in the batches settled below; one slower
        // than this wait gives its units back itself (`finished`).
        let deadline = Instant::now() + self.svc.wait;
        while self.state.lock().refill == Refill::InFlight && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (spent, unused) = {
            let mut st = self.state.lock();
            st.finished = true;
            let mut unused = Vec::new();
            while let Some(b) = st.batches.pop_front() {
                let (used, rest) = split(&b.r, b.units, b.used);
                if b.used > 0 {
                    st.seq += 1;
                    let seq = st.seq;
                    st.spent.push(Spent {
                        seq,
                        r: used,
                        units: b.used,
                        period: b.period,
                    });
                }
                unused.push(rest);
            }
            st.available = 0;
            (std::mem::take(&mut st.spent), unused)
        };
        for r in unused {
            self.give_back(&r).await;
        }
        self.emit(spent).await;
    }

    async fn give_back(&self, r: &Reservation) {
        let customer = self.terms.principal.customer.id.as_str();
        if let Err(e) = self.svc.store.give_back(customer, r).await {
            tracing::warn!(error = %e, "unused WebSocket units not given back");
        }
    }

    async fn emit(&self, spent: Vec<Spent>) {
        let p = &self.terms.principal;
        for s in spent {
            self.svc
                .usage
                .emit(UsageEvent {
                    request_id: format!("{}-{}", self.terms.request_id, s.seq),
                    ts: Utc::now(),
                    customer_id: p.customer.id.as_str().to_owned(),
                    key_id: p.key_id().to_owned(),
                    plan_id: p.plan.id.as_str().to_owned(),
                    route: self.terms.route.to_string(),
                    method: "GET".into(),
                    status: 101,
                    billable: true,
                    units: s.units,
                    overage_units: s.r.overage_units,
                    amount_micros: s.r.amount_micros(),
                    credits_micros: s.r.credits_micros,
                    period: s.period,
                    latency_us: 0,
                    payment: None,
                })
                .await;
        }
    }
}

/// Takes `units` from the oldest batches; a batch used up becomes spent.
fn consume(st: &mut State, units: u64) {
    st.available -= units;
    let mut need = units;
    while need > 0 {
        let Some(b) = st.batches.front_mut() else {
            return;
        };
        let take = need.min(b.units - b.used);
        b.used += take;
        need -= take;
        if b.used == b.units {
            if let Some(b) = st.batches.pop_front() {
                st.seq += 1;
                let seq = st.seq;
                st.spent.push(Spent {
                    seq,
                    r: b.r,
                    units: b.units,
                    period: b.period,
                });
            }
        }
    }
}

/// Splits a reservation of `units` of which `used` were consumed into the
/// part to bill and the part to give back. Units inside the quota come
/// first, so the unused ones are the overage ones first; credits and the
/// overage price are per unit.
fn split(r: &Reservation, units: u64, used: u64) -> (Reservation, Reservation) {
    let within = units - r.overage_units;
    let used_within = used.min(within);
    let used_over = used - used_within;
    let over_price = if r.overage_units > 0 {
        r.overage_micros / i64::try_from(r.overage_units).unwrap_or(i64::MAX)
    } else {
        0
    };
    let credit_price = if units > 0 {
        r.credits_micros / i64::try_from(units).unwrap_or(i64::MAX)
    } else {
        0
    };
    let used_i = i64::try_from(used).unwrap_or(i64::MAX);
    let used_over_i = i64::try_from(used_over).unwrap_or(i64::MAX);
    let quota_used = if r.quota_units > 0 { used } else { 0 };
    let spent = Reservation {
        quota_units: quota_used,
        overage_units: used_over,
        overage_micros: over_price * used_over_i,
        credits_micros: credit_price * used_i,
        period_start: r.period_start,
    };
    let rest = Reservation {
        quota_units: r.quota_units - quota_used,
        overage_units: r.overage_units - used_over,
        overage_micros: r.overage_micros - spent.overage_micros,
        credits_micros: r.credits_micros - spent.credits_micros,
        period_start: r.period_start,
    };
    (spent, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partly_used_reservation_bills_what_was_used_and_returns_the_rest() {
        // 10 units: 6 inside the quota, 4 overage at 200 each; 50 credits each.
        let r = Reservation {
            quota_units: 10,
            overage_units: 4,
            overage_micros: 800,
            credits_micros: 500,
            period_start: 7,
        };
        let (used, rest) = split(&r, 10, 8);
        assert_eq!(
            (
                used.quota_units,
                used.overage_units,
                used.overage_micros,
                used.credits_micros
            ),
            (8, 2, 400, 400)
        );
        assert_eq!(
            (
                rest.quota_units,
                rest.overage_units,
                rest.overage_micros,
                rest.credits_micros
            ),
            (2, 2, 400, 100)
        );
        let (used, rest) = split(&r, 10, 0);
        assert_eq!(used.quota_units + used.credits_micros as u64, 0);
        assert_eq!(rest, r);
        let (used, rest) = split(&r, 10, 10);
        assert_eq!(used, r);
        assert_eq!(rest.quota_units + rest.credits_micros as u64, 0);
    }

    mod with_a_store {
        use super::super::*;
        use paygate_core::metering::limits_for;
        use paygate_core::records::{CustomerRecord, KeyRecord};
        use paygate_core::Micros;
        use paygate_core::{CustomerId, KeyId, Plan, PlanId};
        use paygate_store::{
            Admission, Counters, Credential, Limits, MemoryStore, SeedMode, Snapshot, Store,
            StoreError, WebsocketSlot,
        };
        use paygate_usage::{BatchTarget, Batching, DeliveryError, Written};

        #[derive(Default)]
        struct Recorded(parking_lot::Mutex<Vec<UsageEvent>>);

        #[async_trait::async_trait]
        impl BatchTarget for Recorded {
            async fn write(&self, batch: &[UsageEvent]) -> Result<Written, DeliveryError> {
                self.0.lock().extend_from_slice(batch);
                Ok(Written::Ledger(batch.len() as u64))
            }
        }

        fn principal(plan: serde_json::Value) -> Principal {
            let plan: Plan = serde_json::from_value(plan).unwrap();
            let customer = CustomerRecord {
                id: CustomerId::new("c").unwrap(),
                name: "C".into(),
                email: "c@example.com".into(),
                plan_id: PlanId::new("p").unwrap(),
                anchor_day: 1,
                created_at: Utc::now(),
            };
            let key = KeyRecord {
                id: KeyId::new("k").unwrap(),
                customer_id: customer.id.clone(),
                prefix: "pg_live_abcd".into(),
                hash: [0; 32],
                created_at: Utc::now(),
            };
            Principal {
                credential: Credential::ApiKey(Arc::new(key.into())),
                customer: Arc::new(customer),
                plan: Arc::new(plan),
            }
        }

        /// A store that answers `admit` late, standing in for a slow Redis.
        struct Slow(Arc<MemoryStore>, Duration, std::sync::atomic::AtomicU32);

        #[async_trait::async_trait]
        impl Store for Slow {
            async fn admit(&self, c: &str, l: &Limits) -> Result<Admission, StoreError> {
                tokio::time::sleep(self.1).await;
                let a = self.0.admit(c, l).await;
                self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                a
            }
            async fn give_back(&self, c: &str, r: &Reservation) -> Result<(), StoreError> {
                self.0.give_back(c, r).await
            }
            async fn peek(&self, c: &str, l: &Limits) -> Result<Snapshot, StoreError> {
                self.0.peek(c, l).await
            }
            async fn add_credits(&self, c: &str, m: Micros) -> Result<Micros, StoreError> {
                self.0.add_credits(c, m).await
            }
            async fn seed(&self, c: &str, n: Counters, m: SeedMode) -> Result<bool, StoreError> {
                self.0.seed(c, n, m).await
            }
            async fn open_websocket(
                &self,
                c: &str,
                lease: &str,
                max: u32,
                ttl: u64,
            ) -> Result<WebsocketSlot, StoreError> {
                self.0.open_websocket(c, lease, max, ttl).await
            }
            async fn renew_websocket(
                &self,
                c: &str,
                lease: &str,
                ttl: u64,
            ) -> Result<(), StoreError> {
                self.0.renew_websocket(c, lease, ttl).await
            }
            async fn close_websocket(&self, c: &str, lease: &str) -> Result<(), StoreError> {
                self.0.close_websocket(c, lease).await
            }
            async fn websockets_open(&self, c: &str) -> Result<u32, StoreError> {
                self.0.websockets_open(c).await
            }
            async fn claim_payment(
                &self,
                identity: &str,
                ttl: u64,
            ) -> Result<paygate_store::PaymentClaim, StoreError> {
                self.0.claim_payment(identity, ttl).await
            }
            async fn release_payment(&self, identity: &str) -> Result<(), StoreError> {
                self.0.release_payment(identity).await
            }
            async fn ping(&self) -> Result<(), StoreError> {
                self.0.ping().await
            }
            async fn epoch(&self) -> Result<Option<String>, StoreError> {
                self.0.epoch().await
            }
            async fn mark_epoch(&self, c: &str) -> Result<(), StoreError> {
                self.0.mark_epoch(c).await
            }
        }

        /// What a test connection is charged and how its store behaves.
        struct Setup {
            quota: u64,
            message_cost: u64,
            minute_cost: u64,
            /// How long before now the connection opened.
            ago: Duration,
            /// How late the store answers `admit`.
            store_delay: Duration,
            wait: Duration,
        }

        impl Default for Setup {
            fn default() -> Self {
                Self {
                    quota: 100,
                    message_cost: 0,
                    minute_cost: 0,
                    ago: Duration::ZERO,
                    store_delay: Duration::ZERO,
                    wait: Duration::from_secs(1),
                }
            }
        }

        /// A connection as `setup` says, its ticker stopped (the tests
        /// charge minutes themselves).
        async fn connection(
            setup: Setup,
        ) -> (
            Arc<WsConnection>,
            Arc<MemoryStore>,
            Arc<Recorded>,
            Arc<Slow>,
        ) {
            let store = Arc::new(MemoryStore::new());
            let p = principal(serde_json::json!({
                "id": "p", "name": "P", "rate_limit": {"requests": 1, "per": "second"},
                "quota": {"calls": setup.quota, "period": "month"}
            }));
            let (_, period) = limits_for(&p.plan, 1, &p.customer, Utc::now());
            let counters = Counters {
                credits_micros: 0,
                quota_used: 0,
                period_start: period.start.timestamp(),
            };
            store
                .seed("c", counters, SeedMode::Overwrite)
                .await
                .unwrap();
            let recorded = Arc::new(Recorded::default());
            let metrics = paygate_metrics::Metrics::new().unwrap();
            let batching = Batching {
                buffer: 64,
                batch_size: 1,
                flush_interval: Duration::from_millis(1),
            };
            let (usage, writer) =
                paygate_usage::pipeline(recorded.clone(), metrics.clone(), batching);
            tokio::spawn(writer.run());
            let slow = Arc::new(Slow(
                Arc::clone(&store),
                setup.store_delay,
                std::sync::atomic::AtomicU32::new(0),
            ));
            let conn = WsConnection::opened_at(
                Terms {
                    principal: p,
                    request_id: "rid".into(),
                    route: Arc::from("stream"),
                    message_cost: setup.message_cost,
                    minute_cost: setup.minute_cost,
                },
                Services {
                    store: StoreHandle::new(slow.clone(), metrics.store_errors.clone()),
                    usage,
                    background: Handle::current(),
                    wait: setup.wait,
                },
                Instant::now() - setup.ago,
            );
            conn.stop.notify_one();
            (conn, store, recorded, slow)
        }

        async fn used(store: &MemoryStore) -> u64 {
            let p = principal(serde_json::json!({
                "id": "p", "name": "P", "rate_limit": {"requests": 1, "per": "second"},
                "quota": {"calls": 1, "period": "month"}
            }));
            let (l, _) = limits_for(&p.plan, 1, &p.customer, Utc::now());
            store.peek("c", &l).await.unwrap().quota_used
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn each_started_minute_after_the_first_is_charged_once() {
            // Open 2 min 5 s: the third minute has started, two are due.
            let (conn, store, recorded, _) = connection(Setup {
                minute_cost: 3,
                ago: Duration::from_secs(125),
                ..Setup::default()
            })
            .await;
            conn.charge_minutes().await.unwrap();
            conn.charge_minutes().await.unwrap();
            conn.finish().await;
            assert_eq!(used(&store).await, 6);
            let deadline = Instant::now() + Duration::from_secs(5);
            while recorded.0.lock().iter().map(|e| e.units).sum::<u64>() < 6 {
                assert!(Instant::now() < deadline, "{:?}", recorded.0.lock());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let events = recorded.0.lock().clone();
            assert!(events
                .iter()
                .all(|e| e.request_id.starts_with("rid-") && e.billable));
            assert_eq!(events.iter().map(|e| e.units).sum::<u64>(), 6);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_minute_that_cannot_be_paid_closes_the_connection() {
            let (conn, store, _, _) = connection(Setup {
                quota: 4,
                minute_cost: 3,
                ago: Duration::from_secs(150),
                ..Setup::default()
            })
            .await;
            // One minute (3 units) fits in the quota of 4, the second does not.
            assert_eq!(
                conn.charge_minutes().await,
                Err(CloseReason::Unpaid(ErrorCode::QuotaExhausted))
            );
            conn.state.lock().close = Some(CloseReason::Unpaid(ErrorCode::QuotaExhausted));
            let mut body = Some(Bytes::from_static(b"\x81\x02hi"));
            conn.upstream_bytes(&mut FrameReader::default(), &mut body);
            assert_eq!(
                body.unwrap().as_ref(),
                close_frame(1008, "quota_exhausted").as_slice(),
                "the next upstream bytes are replaced by the close frame"
            );
            conn.finish().await;
            assert_eq!(used(&store).await, 3);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_refill_that_lands_after_close_gives_its_units_back() {
            // The first batch is asked for at open; the store answers after
            // 300 ms, and the close waits only 50 ms for it.
            let (conn, store, recorded, slow) = connection(Setup {
                message_cost: 1,
                store_delay: Duration::from_millis(300),
                wait: Duration::from_millis(50),
                ..Setup::default()
            })
            .await;
            conn.finish().await;
            assert_eq!(
                slow.2.load(std::sync::atomic::Ordering::SeqCst),
                0,
                "still on its way"
            );
            // The batch is reserved after the close, then given back.
            let deadline = Instant::now() + Duration::from_secs(5);
            while slow.2.load(std::sync::atomic::Ordering::SeqCst) == 0 || used(&store).await != 0 {
                assert!(Instant::now() < deadline, "used {}", used(&store).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(used(&store).await, 0);
            assert!(
                recorded.0.lock().is_empty(),
                "nothing was delivered, nothing billed"
            );
        }
    }

    #[test]
    fn consuming_across_batches_spends_each_once() {
        let batch = |units| Batch {
            r: Reservation {
                quota_units: units,
                ..Reservation::default()
            },
            units,
            used: 0,
            period: "2026-12".into(),
        };
        let mut st = State {
            batches: VecDeque::from([batch(4), batch(4)]),
            available: 8,
            ..State::new()
        };
        consume(&mut st, 3);
        assert!(st.spent.is_empty());
        consume(&mut st, 3); // 1 from the first batch, 2 from the second
        assert_eq!(st.spent.len(), 1);
        assert_eq!((st.spent[0].seq, st.spent[0].units), (1, 4));
        assert_eq!((st.available, st.batches[0].used), (2, 2));
    }
}
