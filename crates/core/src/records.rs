//! The records the admin API writes and every process reads: customers and
//! API keys (plans are in [`crate::plan`]). The database holds them; the
//! gateway's catalog caches them.

use chrono::{DateTime, Utc};

use crate::apikey::KeyHash;
use crate::{CustomerId, KeyId, PlanId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRecord {
    pub id: CustomerId,
    pub name: String,
    pub email: String,
    pub plan_id: PlanId,
    /// Day of month (UTC) on which the customer's billing period starts.
    pub anchor_day: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub customer_id: CustomerId,
    pub prefix: String,
    pub hash: KeyHash,
    pub created_at: DateTime<Utc>,
}
