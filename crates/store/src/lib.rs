//! The data plane: per-customer counters (rate limit, quota, credits,
//! WebSockets) behind the [`Store`] trait, and the [`Catalog`] of plans,
//! customers and keys that the gateway serves from memory.
//!
//! Admitting one call is one [`Store::admit`]: rate limit, quota and credits
//! are decided and reserved together, all or nothing, so that a backend with a
//! network hop (Redis) needs one round trip per call.

pub mod catalog;
pub mod changes;
mod gcra;
pub mod memory;
pub mod redis_store;
pub mod reseed;

pub use catalog::{Catalog, CustomerRecord, KeyRecord, Principal};
pub use changes::{ChangeBus, RecordChange};
pub use memory::MemoryStore;
pub use redis_store::{RedisConn, RedisStore};
pub use reseed::ReseedOnMiss;

use async_trait::async_trait;
use paygate_core::Micros;

/// What one call asks of the store, derived from the caller's plan and route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// GCRA: steady-state spacing between calls.
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
    /// The store has no counters for this customer yet (a new or emptied
    /// Redis): deciding now would hand out a fresh quota.
    #[error("counters not loaded from the ledger yet")]
    NotSeeded,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Decides and reserves one call atomically.
    async fn admit(&self, customer: &str, limits: &Limits) -> Result<Admission, StoreError>;

    /// Returns what a non-billable call reserved. Units counted in a period
    /// that has since ended are not given back.
    async fn give_back(&self, customer: &str, r: &Reservation) -> Result<(), StoreError>;

    /// Current counters without reserving anything.
    async fn peek(&self, customer: &str, limits: &Limits) -> Result<Snapshot, StoreError>;

    /// Adds prepaid credits and returns the new balance.
    async fn add_credits(&self, customer: &str, micros: Micros) -> Result<Micros, StoreError>;

    /// Loads quota and credit counters rebuilt from the ledger; returns
    /// whether anything was written.
    async fn seed(
        &self,
        customer: &str,
        counters: Counters,
        mode: SeedMode,
    ) -> Result<bool, StoreError>;

    async fn open_websocket(&self, customer: &str, max: u32) -> Result<WebsocketSlot, StoreError>;

    async fn close_websocket(&self, customer: &str) -> Result<(), StoreError>;

    /// Reachability, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
