//! The database: records the admin API writes (plans, customers, keys,
//! credits) and the usage ledger, plus the writer that moves usage events
//! from the gateway into the ledger and the rebuild of store counters from it.
//!
//! The database is the truth; the store's counters are a cache of it.

pub mod aggregate;
pub mod audit;
mod db;
pub mod idempotency;
pub mod invoices;
pub mod ledger;
pub mod rating;
pub mod reconcile;
pub mod records;
pub mod report;
mod rollup;
pub mod spill;
pub mod stream;

pub use db::{Backend, Database, DbError};
pub use ledger::{pipeline, BatchTarget, UsageSink, UsageWriter, Written};
