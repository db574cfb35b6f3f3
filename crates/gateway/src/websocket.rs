//! The WebSocket step: an upgrade takes one of the plan's concurrent
//! connection slots (`max_websockets`) as a lease in the store, named by the
//! call's request id, renewed while the connection stays open (`ws_meter`).

use paygate_core::ErrorCode;
use paygate_store::{Principal, WebsocketSlot};
use pingora::http::RequestHeader;

use crate::refusal::Refusal;
use crate::store::StoreHandle;

/// What kind of exchange a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exchange {
    /// A request and its response.
    #[default]
    Http,
    /// A WebSocket upgrade holding a slot in the store until it closes.
    WebSocket,
}

pub(crate) fn is_upgrade(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Takes a slot for a WebSocket upgrade: 429 `too_many_websockets` when
/// the plan's are all taken, 503 when the store cannot say.
pub async fn take_slot(
    req: &RequestHeader,
    principal: &Principal,
    store: &StoreHandle,
    lease: &str,
) -> Result<Exchange, Refusal> {
    if !is_upgrade(req) {
        return Ok(Exchange::Http);
    }
    let max = principal.plan.max_websockets;
    match store
        .open_websocket(principal.customer.id.as_str(), lease, max)
        .await
    {
        Ok(WebsocketSlot::Granted) => Ok(Exchange::WebSocket),
        Ok(WebsocketSlot::Full) => Err(Refusal::new(
            ErrorCode::TooManyWebsockets,
            format!("your plan allows {max} concurrent WebSocket connection(s)"),
        )
        .retry_after_ms(1000)),
        Err(e) => Err(Refusal::store_unavailable(e)),
    }
}
