//! Shared by the billing crate's integration tests.
#![allow(dead_code)]

use chrono::Utc;
use paygate_core::UsageEvent;

/// A billable one-unit call `req-<i>` of customer `c`, now, in period 2026-11.
pub fn event(i: usize) -> UsageEvent {
    UsageEvent {
        request_id: format!("req-{i}"),
        ts: Utc::now(),
        customer_id: "c".into(),
        key_id: "k".into(),
        plan_id: "p".into(),
        route: "r".into(),
        method: "GET".into(),
        status: 200,
        billable: true,
        units: 1,
        overage_units: 0,
        amount_micros: 0,
        credits_micros: 0,
        period: "2026-11".into(),
        latency_us: 5,
    }
}
