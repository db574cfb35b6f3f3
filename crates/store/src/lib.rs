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
mod shards;
pub mod usage_stream;

pub use catalog::{ApiKey, Catalog, Credential, CustomerRecord, KeyIndex, KeyRecord, Principal};
pub use changes::{ChangeBus, RecordChange};
pub use memory::MemoryStore;
pub use redis_store::{RedisConn, RedisEndpoint, RedisStore};
pub use reseed::ReseedOnMiss;

use async_trait::async_trait;
use paygate_core::Micros;

// The values the store trades in are plain data, shared with the crates that
// never talk to a store (billing, admin views): they live in core.
pub use paygate_core::metering::{
    Admission, Counters, Decision, Limits, PaymentClaim, QuotaLimit, Reservation, SeedMode,
    Snapshot, WebsocketSlot,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What Redis (or the connection to it) answered; classify it by
    /// `code()` / `kind()`, never by its text.
    #[error("store unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("store timed out")]
    Timeout,
    /// The store has no counters for this customer yet (a new or emptied
    /// Redis): deciding now would hand out a fresh quota.
    #[error("counters not loaded from the ledger yet")]
    NotSeeded,
}

/// How long a WebSocket lease lives without renewal: a connection of a
/// gateway that died stops counting against `max_websockets` after this.
pub const WEBSOCKET_LEASE_MS: u64 = 30_000;

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

    /// Takes a WebSocket slot as the lease `lease` (the upgrade's request
    /// id) for `ttl_ms`, unless `max` unexpired leases are held already.
    async fn open_websocket(
        &self,
        customer: &str,
        lease: &str,
        max: u32,
        ttl_ms: u64,
    ) -> Result<WebsocketSlot, StoreError>;

    /// Extends a lease while its connection lives (re-taking it if it had
    /// expired: the connection is still open and counts).
    async fn renew_websocket(
        &self,
        customer: &str,
        lease: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;

    async fn close_websocket(&self, customer: &str, lease: &str) -> Result<(), StoreError>;

    /// Unexpired leases: the customer's open WebSocket connections.
    async fn websockets_open(&self, customer: &str) -> Result<u32, StoreError>;

    /// Claims an x402 payment's identity once across every process sharing
    /// the store, for `ttl_ms` (past the payment's `validBefore`, after which
    /// the chain refuses it anyway).
    async fn claim_payment(&self, identity: &str, ttl_ms: u64) -> Result<PaymentClaim, StoreError>;

    /// Frees a claim whose payment was never used (the facilitator could not
    /// be asked), so the client may send it again.
    async fn release_payment(&self, identity: &str) -> Result<(), StoreError>;

    /// Reachability, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The marker left once every customer's counters were seeded; `None`
    /// when the store holds none, which after a start means it lost its
    /// data (a Redis restarted without persistence, or flushed).
    async fn epoch(&self) -> Result<Option<String>, StoreError>;

    /// Sets the marker to `candidate` unless one is set (another process's
    /// marker stays).
    async fn mark_epoch(&self, candidate: &str) -> Result<(), StoreError>;
}
