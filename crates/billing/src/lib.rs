//! The database: records the admin API writes (plans, customers, keys,
//! credits) with their audit entries, the usage ledger and its daily rollup,
//! and what finance reads from them: reports, invoices, rating and the
//! ledger's side of reconciliation.
//!
//! The database is the truth; the store's counters are a cache of it. This
//! crate talks to no store and no Redis: the ledger is a
//! `paygate_usage::BatchTarget`, fed by the gateway's usage writer
//! (embedded) or by the Redis stream consumer (production).

pub mod aggregate;
pub mod audit;
mod db;
pub mod idempotency;
pub mod invoices;
pub mod ledger;
mod paging;
pub mod payments;
pub mod rating;
pub mod reconcile;
pub mod records;
pub mod report;
mod rollup;

pub use db::{Backend, Database, DbError};
pub use paging::Page;
