//! The gateway: a Pingora `ProxyHttp` that authenticates, authorizes, limits
//! and meters every call, then forwards it to an upstream pool.
//!
//! `proxy.rs` is glue: each phase calls one module that does one job.

pub mod admission;
pub mod auth;
mod headers;
pub mod me;
mod proxy;
pub mod refusal;
pub mod routing;
pub mod upstream;

pub use proxy::{Gateway, GatewayDeps};
