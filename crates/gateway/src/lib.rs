//! The gateway: a Pingora `ProxyHttp` that authenticates, authorizes, limits
//! and meters every call, then forwards it to an upstream pool.
//!
//! `proxy.rs` is glue: each phase calls the modules that do one job each.
//! The admission steps, in order: `sizes`, `routing`, `auth`,
//! `entitlement`, `websocket`, `admission`; each returns
//! `Result<_, Refusal>`. On an x402 route a call may instead carry a
//! payment: `payment` checks it (offer, claim, verify) and `paid` forwards
//! the call, holds the answer until the payment settled, then sends it. `outcome` holds the plain rules for how a call
//! ended (the answer to a failed attempt, whether it is billed).
//! This crate never touches the database: it reads the catalog and makes
//! one store call per admitted call.

pub mod access_log;
pub mod admission;
pub mod auth;
pub mod cache;
pub mod cors;
mod ctx;
pub mod entitlement;
mod headers;
pub mod live;
pub mod me;
pub mod outcome;
mod paid;
pub mod payment;
mod proxy;
pub mod refusal;
mod respond;
pub mod routing;
pub mod sizes;
pub mod store;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod websocket;
pub mod ws_frames;
pub mod ws_meter;

pub use proxy::{Gateway, GatewayDeps};
