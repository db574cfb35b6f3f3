//! Where a customer stands now: the body of `GET /paygate/v1/me` on the
//! gateway and of `GET /admin/v1/customers/{id}/balance` on the admin API.

use chrono::SecondsFormat;
use serde::Serialize;

use crate::metering::Snapshot;
use crate::period::Period;
use crate::records::CustomerRecord;
use crate::{CustomerId, Micros, Per, Plan, PlanId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Balance {
    pub customer_id: CustomerId,
    pub plan_id: PlanId,
    #[schema(value_type = i64)]
    pub credits_micros: Micros,
    /// `None` on plans without a quota (serialized as `null`).
    #[schema(required = true)]
    pub quota: Option<QuotaBalance>,
    pub rate_limit: RateLimitView,
    /// The billing period (`YYYY-MM`) the quota counts in.
    pub period: String,
    /// WebSocket connections open now (unexpired leases in the store).
    pub websockets_open: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QuotaBalance {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// RFC 3339, the end of the current period.
    #[schema(format = DateTime)]
    pub resets_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RateLimitView {
    pub requests: u32,
    pub per: Per,
    /// What may be sent at once: the plan's burst, or `requests` without one.
    pub burst: u32,
}

impl Balance {
    pub fn new(customer: &CustomerRecord, plan: &Plan, snap: &Snapshot, period: &Period) -> Self {
        Self {
            customer_id: customer.id.clone(),
            plan_id: plan.id.clone(),
            credits_micros: snap.credits_micros,
            quota: plan.quota.map(|q| QuotaBalance {
                limit: q.calls,
                used: snap.quota_used,
                remaining: q.calls.saturating_sub(snap.quota_used),
                resets_at: period.end.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
            rate_limit: RateLimitView {
                requests: plan.rate_limit.requests,
                per: plan.rate_limit.per,
                burst: plan.rate_limit.capacity(),
            },
            period: period.name(),
            websockets_open: 0,
        }
    }

    pub fn with_websockets_open(self, n: u32) -> Self {
        Self {
            websockets_open: n,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn plan(json: serde_json::Value) -> Plan {
        serde_json::from_value(json).unwrap()
    }

    fn customer() -> CustomerRecord {
        CustomerRecord {
            id: CustomerId::new("c").unwrap(),
            name: "C".into(),
            email: "c@example.com".into(),
            plan_id: PlanId::new("p").unwrap(),
            anchor_day: 15,
            created_at: Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn shape_with_and_without_a_quota() {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
        let period = Period::containing(15, now);
        let snap = Snapshot {
            rate_remaining: 3,
            rate_reset_ms: 10,
            quota_used: 7,
            credits_micros: 51_000,
        };
        let quota = plan(serde_json::json!({"id":"p","name":"P",
            "rate_limit":{"requests":10,"per":"second","burst":20},"quota":{"calls":5}}));
        let got = serde_json::to_value(Balance::new(&customer(), &quota, &snap, &period)).unwrap();
        assert_eq!(
            got,
            serde_json::json!({
                "customer_id": "c", "plan_id": "p", "credits_micros": 51_000,
                "quota": {"limit": 5, "used": 7, "remaining": 0, "resets_at": "2026-12-15T00:00:00Z"},
                "rate_limit": {"requests": 10, "per": "second", "burst": 20},
                "period": "2026-11",
                "websockets_open": 0,
            })
        );
        let payg = plan(serde_json::json!({"id":"p","name":"P",
            "rate_limit":{"requests":50,"per":"minute"},"price_per_call_micros":17000}));
        let got = serde_json::to_value(Balance::new(&customer(), &payg, &snap, &period)).unwrap();
        assert_eq!(got["quota"], serde_json::Value::Null);
        assert_eq!(got["rate_limit"]["burst"], 50);
    }
}
