//! Answers paygate writes itself (refusals, `/paygate/v1/me`, proxy
//! failures): one JSON response writer, so each carries the same headers.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::ctx::CallCtx;

/// Writes a whole JSON response: `status`, `Content-Type`,
/// `Content-Length`, `X-Request-Id`, the caller's limit headers when known,
/// and `extra`.
pub async fn json(
    session: &mut Session,
    ctx: &CallCtx,
    status: u16,
    body: String,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(8 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    ctx.where_you_stand(&mut resp);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}
