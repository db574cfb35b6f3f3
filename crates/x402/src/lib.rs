//! x402 pay-per-call (HTTP 402 payments): the protocol's parts that know
//! nothing of the gateway:
//!
//! - [`wire`]: the JSON shapes of protocol versions 1 and 2 (what the 402
//!   offer says, what a paying client sends, what a facilitator answers);
//! - [`header`]: the base64-of-JSON header forms (`X-PAYMENT`,
//!   `PAYMENT-SIGNATURE`, `PAYMENT-REQUIRED`, `PAYMENT-RESPONSE`, …);
//! - [`amount`]: prices in micro-dollars to the asset's atomic units,
//!   exactly, or a refusal;
//! - [`offer`]: a route's offer ([`offer::Offer`]) in both forms, and the
//!   local check of a payment against it (scheme, network, asset, payee,
//!   amount, validity window) before any facilitator is asked.
//!
//! The wire types are our own rather than the `x402-types` crate's: that
//! crate's settle response does not read a `{"success":false,
//! "errorReason":…}` answer, a verify answer without `payer` does not parse,
//! it has no header codecs, and it requires `alloy-primitives`.
//!
//! - [`facilitator`]: the client of a facilitator's `/verify` and `/settle`.
//!
//! The HTTP flow (verify → serve → settle inside the Pingora phases), the
//! payment claim in the store and the ledger come on top of this crate.

/// Prices to atomic units: in `paygate-core`, so that the configuration
/// check refuses an unrepresentable price without this crate.
pub use paygate_core::amount;
pub mod facilitator;
pub mod header;
pub mod offer;
pub mod wire;
