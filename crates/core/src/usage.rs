//! The usage event: one per admitted call, keyed by `request_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Micros;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// UUIDv7 minted on admission; the ledger holds each once.
    pub request_id: String,
    pub ts: DateTime<Utc>,
    pub customer_id: String,
    pub key_id: String,
    pub plan_id: String,
    pub route: String,
    pub method: String,
    /// HTTP status sent to the client (0 when the client went away first).
    pub status: u16,
    pub billable: bool,
    /// Quota units counted (the route's cost); 0 when not billable.
    pub units: u64,
    /// Of `units`, those past the quota, billed at the plan's overage price.
    #[serde(default)]
    pub overage_units: u64,
    /// Money charged for this call (pay-per-call or overage); 0 when not billable.
    pub amount_micros: Micros,
    /// The part of `amount_micros` paid from prepaid credits.
    pub credits_micros: Micros,
    /// `YYYY-MM` billing period of the customer in which the call was admitted.
    pub period: String,
    pub latency_us: u64,
}
