//! Money is integer micro-units of the currency: 1 USD = 1,000,000 micros.

/// An amount in micro-units. Signed so that give-backs and adjustments can be
/// expressed, but balances are kept non-negative by the store.
pub type Micros = i64;

pub const MICROS_PER_UNIT: Micros = 1_000_000;
