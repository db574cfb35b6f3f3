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

/// Writes an answer without a body (a CORS preflight's 204): `status`,
/// `X-Request-Id` and `extra`.
pub async fn empty(
    session: &mut Session,
    ctx: &CallCtx,
    status: u16,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(2 + extra.len()))?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), true).await
}

/// Over HTTP/2, ending a refused call's stream while the client is still
/// uploading makes the h2 layer reset it (`RST_STREAM` with `NO_ERROR`, as
/// RFC 9113 allows), and common clients (curl 7.x among them) then report a
/// failed transfer instead of the answer they already got. nginx reads and
/// drops such a body; so does this, up to `cap` bytes or two seconds, and
/// past that the stream is reset. HTTP/1.1 needs none of this: the
/// connection is closed after the answer.
pub async fn drain_refused_upload(session: &mut Session, cap: u64) {
    if !session.is_http2() {
        return;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut read = 0u64;
    while read <= cap {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => read += chunk.len() as u64,
            _ => return,
        }
    }
}
