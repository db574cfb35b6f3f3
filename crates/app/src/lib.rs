//! paygate as a library: [`App::build`] / [`App::run`] start every role of
//! the `paygate` binary from a typed config, and [`commands`] holds what
//! each subcommand does. The binary, the demo and the tests all go through
//! here, so there is one way paygate starts.
//!
//! Module map: `app` (the wiring and its start-up order), `catalog_sync`
//! (records from the database, changes over Redis pub/sub), `store` (the
//! configured store and the reseed worker), `usage` (the usage writer and
//! the stream consumer), `drift` (store vs ledger), `server` (Pingora),
//! `tls` (served certificates: loading, SIGHUP re-read, expiry), `shutdown`, `demo` (with `demo_facilitator`, a simulated x402
//! facilitator), `commands`.

mod app;
pub mod catalog_sync;
pub mod commands;
mod demo;
mod demo_facilitator;
pub mod drift;
mod error;
pub mod logging;
pub mod provision;
pub mod reload;
mod role;
mod server;
mod shutdown;
pub mod store;
mod tls;
pub mod usage;

pub use app::{control_runtime, App};
pub use error::AppError;
pub use role::Role;
pub use shutdown::{Shutdown, ShutdownTrigger};
