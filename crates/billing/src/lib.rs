//! The database: records the admin API writes (plans, customers, keys,
//! credits) and the usage ledger, plus the writer that moves usage events
//! from the gateway into the ledger and the rebuild of store counters from it.
//!
//! The database is the truth; the store's counters are a cache of it.

mod db;
pub mod idempotency;
pub mod ledger;
pub mod records;
pub mod spill;
pub mod stream;

pub use db::{Database, DbError};
pub use ledger::{pipeline, BatchTarget, UsageSink, UsageWriter, Written};
