//! Shared by the billing crate's integration tests.
#![allow(dead_code)]

/// A billable one-unit call `req-<i>` of customer `c`, now, in period 2026-11.
pub use paygate_testkit::usage_event as event;
