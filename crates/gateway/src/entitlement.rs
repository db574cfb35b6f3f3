//! The plan-entitlement step: a plan lists the routes it may call.

use paygate_core::ErrorCode;
use paygate_store::{Limits, Principal, Snapshot};

use crate::refusal::Refusal;
use crate::routing::Route;
use crate::store::StoreHandle;

/// 403 `route_not_in_plan` when the caller's plan leaves this route out.
/// The refusal still tells the caller where it stands: the store's counters
/// (a peek, nothing reserved) go to `snapshot`.
pub async fn check(
    principal: &Principal,
    route: &Route,
    store: &StoreHandle,
    limits: &Limits,
    snapshot: &mut Option<Snapshot>,
) -> Result<(), Refusal> {
    if principal.plan.allows_route(&route.id) {
        return Ok(());
    }
    *snapshot = store
        .peek(principal.customer.id.as_str(), limits)
        .await
        .ok();
    Err(Refusal::new(
        ErrorCode::RouteNotInPlan,
        "your plan does not include this route",
    ))
}
