pub mod auth;
pub mod billing;
pub mod credits;
pub mod customers;
pub mod idempotency;
pub mod keys;
pub mod ops;
pub mod plans;
