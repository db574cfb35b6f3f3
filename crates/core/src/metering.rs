//! What the store decides and keeps, as plain data: the limits one call asks
//! for ([`limits_for`]), the decision and reservation it gets back, and the
//! counters rebuilt from the ledger. The `Store` trait that trades in them
//! lives in the store crate; these types are here so that crates which never
//! talk to a store (billing, the admin API's views) can use them.

use chrono::{DateTime, Utc};

use crate::period::Period;
use crate::records::CustomerRecord;
use crate::{Micros, Overage, Plan};

/// What one call asks of the store, derived from the caller's plan and route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// GCRA: steady-state spacing between calls. 0: no rate limit (units an
    /// open connection spends, see [`spend_limits`]).
    pub emission_interval_ns: u64,
    /// GCRA: calls that may be sent at once.
    pub capacity: u32,
    /// Quota units this call counts (the route's cost).
    pub units: u64,
    pub quota: Option<QuotaLimit>,
    /// Price of this call paid from prepaid credits (plan price × cost).
    pub credit_price_micros: Option<Micros>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimit {
    pub limit: u64,
    /// Unix seconds of the customer's current period start: the counter's identity.
    pub period_start: i64,
    /// `None` blocks at the limit; `Some(price)` admits and bills each unit past it.
    pub overage_price_micros: Option<Micros>,
}

/// Why a call was admitted or refused; refusals reserve nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admitted(Reservation),
    RateLimited { retry_after_ms: u64 },
    QuotaExhausted,
    InsufficientCredits,
}

/// What an admitted call took, so a non-billable outcome can give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reservation {
    /// Units added to the quota counter (0 on plans without a quota).
    pub quota_units: u64,
    /// Of those, units past the quota, billed at the overage price.
    pub overage_units: u64,
    pub overage_micros: Micros,
    /// Credits taken from the prepaid balance.
    pub credits_micros: Micros,
    /// The quota period the units were counted in.
    pub period_start: i64,
}

impl Reservation {
    /// Money this call costs if it turns out billable.
    pub fn amount_micros(&self) -> Micros {
        self.overage_micros + self.credits_micros
    }
}

/// Counter values after the decision, for the `RateLimit-*`, `X-Quota-*` and
/// `X-Credits-Remaining` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub rate_remaining: u32,
    /// Milliseconds until the bucket is full again.
    pub rate_reset_ms: u64,
    /// Quota units used this period (0 on plans without a quota).
    pub quota_used: u64,
    /// Prepaid balance.
    pub credits_micros: Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub decision: Decision,
    pub snapshot: Snapshot,
}

/// Counter values rebuilt from the ledger on start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub credits_micros: Micros,
    pub quota_used: u64,
    pub period_start: i64,
}

/// Whether a seed may replace counters a store already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    /// Only a customer the store knows nothing about (start-up of one of
    /// several gateways: the live counters are ahead of the ledger).
    IfAbsent,
    /// Replace whatever is there (an explicit rebuild from the ledger).
    Overwrite,
}

/// Outcome of asking for a WebSocket slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebsocketSlot {
    Granted,
    Full,
}

/// Outcome of claiming an x402 payment's identity (network, payer, nonce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentClaim {
    /// First sight: this call may use the payment.
    Claimed,
    /// Claimed before (here, on another gateway, or before a restart):
    /// a replay, never served twice.
    AlreadyClaimed,
}

/// What one call on `plan` with route cost `cost` asks of the store, and the
/// billing period it falls in.
pub fn limits_for(
    plan: &Plan,
    cost: u32,
    customer: &CustomerRecord,
    now: DateTime<Utc>,
) -> (Limits, Period) {
    let (mut limits, period) = spend_limits(plan, u64::from(cost), customer, now);
    limits.emission_interval_ns = plan.rate_limit.emission_interval_ns();
    limits.capacity = plan.rate_limit.capacity();
    (limits, period)
}

/// What spending `units` that are not calls (an open WebSocket's messages
/// and minutes) asks of the store: quota and credits as for calls, no rate
/// limit.
pub fn spend_limits(
    plan: &Plan,
    units: u64,
    customer: &CustomerRecord,
    now: DateTime<Utc>,
) -> (Limits, Period) {
    let period = Period::containing(customer.anchor_day, now);
    let limits = Limits {
        emission_interval_ns: 0,
        capacity: 0,
        units,
        quota: plan.quota.map(|q| QuotaLimit {
            limit: q.calls,
            period_start: period.start.timestamp(),
            overage_price_micros: match plan.overage {
                Overage::Block => None,
                Overage::Price { price_micros } => Some(price_micros),
            },
        }),
        credit_price_micros: plan
            .price_per_call_micros
            .map(|p| p.saturating_mul(i64::try_from(units).unwrap_or(i64::MAX))),
    };
    (limits, period)
}
