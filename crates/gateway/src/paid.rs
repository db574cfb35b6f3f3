//! An x402 call whose payment was verified: forwarded, its answer held
//! whole, settled, and only then sent.
//!
//! Pingora's proxy loop sends the upstream's response header downstream as
//! soon as it arrives, before any body filter could stop it; a paid answer
//! must not leave before its payment settled (or be replaced by a 402 when
//! settlement fails). So this call is forwarded here, with Pingora's own
//! connector and the route's upstream pool, from `request_filter`.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use paygate_core::ErrorCode;
use paygate_x402::facilitator::Facilitator;
use paygate_x402::wire::{PaymentResponse, SettleResponse};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::prelude::*;
use pingora::ErrorType;

use crate::payment::PaidCall;
use crate::upstream::Pool;

/// An upstream answer, whole.
pub struct Held {
    pub header: ResponseHeader,
    pub body: Bytes,
}

/// Why no answer could be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// 502 / 504 as for any proxied call.
    Upstream(ErrorCode),
    /// The answer is larger than `gateway.max_body_bytes`: 502, not settled.
    TooLarge,
}

/// How a settlement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Settled(PaymentResponse),
    /// The facilitator answered `success: false` (whatever its HTTP status).
    Failed(String),
    /// No answer before the payment's window closed: the money may have moved.
    Unknown(String),
}

/// The request body, whole (the call is held anyway): 413 past `max`.
pub async fn read_body(session: &mut Session, max: u64) -> Result<Bytes, ErrorCode> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > max {
                    return Err(ErrorCode::BodyTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => return Err(ErrorCode::BadRequest),
        }
    }
}

/// Sends the call to the pool's targets until one answers: a target that
/// could not be reached is left for the next one when repeating the call
/// is harmless, as the proxy loop does.
pub async fn forward(
    connector: &Connector,
    pool: &Pool,
    tried: &mut Vec<Backend>,
    req: &RequestHeader,
    body: &Bytes,
    max_body: u64,
) -> Result<Held, NotHeld> {
    loop {
        let Some((backend, peer)) = pool.select(tried) else {
            return Err(NotHeld::Upstream(ErrorCode::UpstreamUnavailable));
        };
        tried.push(backend);
        match exchange(connector, &peer, req, body, max_body).await {
            Ok(held) => return Ok(held),
            Err(Attempt::NotSent) if req.method.is_idempotent() && tried.len() < pool.size() => {}
            Err(Attempt::NotSent) => return Err(NotHeld::Upstream(ErrorCode::UpstreamUnavailable)),
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
}

enum Attempt {
    /// The connection failed before the request went out.
    NotSent,
    Failed(NotHeld),
}

fn upstream_failure(e: &Error) -> NotHeld {
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            NotHeld::Upstream(ErrorCode::UpstreamTimeout)
        }
        _ => NotHeld::Upstream(ErrorCode::UpstreamUnavailable),
    }
}

async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    req: &RequestHeader,
    body: &Bytes,
    max_body: u64,
) -> Result<Held, Attempt> {
    let (mut up, _reused) = connector
        .get_http_session(peer)
        .await
        .map_err(|_| Attempt::NotSent)?;
    up.set_read_timeout(peer.options.read_timeout);
    up.set_write_timeout(peer.options.read_timeout);
    let failed = |e: Box<Error>| Attempt::Failed(upstream_failure(&e));
    up.write_request_header(Box::new(req.clone()))
        .await
        .map_err(failed)?;
    if !body.is_empty() {
        up.write_request_body(body.clone(), true)
            .await
            .map_err(failed)?;
    }
    up.finish_request_body().await.map_err(failed)?;
    let header = loop {
        up.read_response_header().await.map_err(failed)?;
        let Some(h) = up.response_header() else {
            return Err(Attempt::Failed(NotHeld::Upstream(
                ErrorCode::UpstreamUnavailable,
            )));
        };
        // `100 Continue` and friends come before the answer.
        if !h.status.is_informational() {
            break h.clone();
        }
    };
    let mut held = BytesMut::new();
    while let Some(chunk) = up.read_response_body().await.map_err(failed)? {
        if (held.len() + chunk.len()) as u64 > max_body {
            up.shutdown().await;
            return Err(Attempt::Failed(NotHeld::TooLarge));
        }
        held.extend_from_slice(&chunk);
    }
    connector
        .release_http_session(up, peer, peer.options.idle_timeout)
        .await;
    Ok(Held {
        header,
        body: held.freeze(),
    })
}

/// Settles the payment, trying again with the same payload (never a new
/// one) until `window` has passed.
pub async fn settle(facilitator: &Facilitator, paid: &PaidCall, window: Duration) -> Settlement {
    let deadline = Instant::now() + window;
    match facilitator
        .settle_until(&paid.facilitator_request(), deadline)
        .await
    {
        Ok(SettleResponse {
            success: true,
            transaction,
            network,
            payer,
            ..
        }) => Settlement::Settled(PaymentResponse {
            success: true,
            transaction: transaction.unwrap_or_default(),
            network: network.unwrap_or_else(|| paid.network_name().to_owned()),
            payer: payer.unwrap_or_else(|| paid.accepted.identity.payer.clone()),
        }),
        Ok(s) => Settlement::Failed(
            s.error_reason
                .unwrap_or_else(|| "settlement_failed".to_owned()),
        ),
        Err(e) => Settlement::Unknown(e.to_string()),
    }
}

/// The held answer as the client receives it: whole, with its length,
/// without the upstream's hop-by-hop headers.
pub fn release_header(held: &Held, head_request: bool) -> ResponseHeader {
    let mut h = held.header.clone();
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        h.remove_header(name);
    }
    if !head_request {
        // Infallible for a number.
        let _ = h.insert_header("content-length", held.body.len().to_string());
    }
    h
}
