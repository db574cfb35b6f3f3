//! The balance view shared by `GET /paygate/v1/me` and the admin API's
//! `GET /admin/v1/customers/{id}/balance`.

use chrono::SecondsFormat;
use paygate_core::period::Period;
use paygate_core::Plan;
use paygate_store::{CustomerRecord, Snapshot};
use serde_json::{json, Value};

pub const ME_PATH: &str = "/paygate/v1/me";

pub fn balance_json(
    customer: &CustomerRecord,
    plan: &Plan,
    snap: &Snapshot,
    period: &Period,
) -> Value {
    let quota = plan.quota.map(|q| {
        json!({
            "limit": q.calls,
            "used": snap.quota_used,
            "remaining": q.calls.saturating_sub(snap.quota_used),
            "resets_at": period.end.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
    });
    json!({
        "customer_id": customer.id,
        "plan_id": plan.id,
        "credits_micros": snap.credits_micros,
        "quota": quota,
        "rate_limit": {
            "requests": plan.rate_limit.requests,
            "per": plan.rate_limit.per,
            "burst": plan.rate_limit.capacity(),
        },
        "period": period.name(),
    })
}
