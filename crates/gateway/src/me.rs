//! `GET /paygate/v1/me`: the caller's own balance, with its own credentials,
//! never billed.

use chrono::{DateTime, Utc};
use paygate_core::balance::Balance;
use paygate_core::metering::limits_for;
use paygate_core::period::Period;
use paygate_store::{Principal, Snapshot};
use pingora::http::RequestHeader;

use crate::auth::Authenticator;
use crate::refusal::Refusal;
use crate::store::StoreHandle;

pub const ME_PATH: &str = "/paygate/v1/me";

pub fn is_me(req: &RequestHeader) -> bool {
    req.uri.path() == ME_PATH
}

/// Who the caller is and where it stands, as of now: a peek at the store,
/// nothing reserved.
pub async fn balance(
    req: &RequestHeader,
    auth: &Authenticator,
    store: &StoreHandle,
    now: DateTime<Utc>,
) -> Result<(Principal, Period, Snapshot, Balance), Refusal> {
    let principal = auth.authenticate(&req.headers).await?;
    let (limits, period) = limits_for(&principal.plan, 1, &principal.customer, now);
    let snap = store
        .peek(principal.customer.id.as_str(), &limits)
        .await
        .map_err(Refusal::store_unavailable)?;
    let websockets = store
        .websockets_open(principal.customer.id.as_str())
        .await
        .map_err(Refusal::store_unavailable)?;
    let balance = Balance::new(&principal.customer, &principal.plan, &snap, &period)
        .with_websockets_open(websockets);
    Ok((principal, period, snap, balance))
}
