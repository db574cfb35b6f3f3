//! What the gateway knows about one call, from `new_ctx` to `logging`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use paygate_core::period::Period;
use paygate_store::{Principal, Reservation, Snapshot};
use pingora::lb::Backend;

use crate::admission::ReservedIn;
use crate::cache::{Fill, Lookup};
use crate::cors;
use crate::headers::{self, HeaderSink};
use crate::live::Live;
use crate::payment::PaidCall;
use crate::routing::Route;
use crate::websocket::Exchange;
use crate::ws_frames::FrameReader;
use crate::ws_meter::WsConnection;

/// An admitted call's state, carried to `logging`.
pub struct Admitted {
    pub route: Arc<Route>,
    pub reservation: Reservation,
    pub reserved_in: ReservedIn,
}

/// Per-call state. Fields fill in as the call goes through the steps; a
/// refusal answers with whatever is known by then.
pub struct CallCtx {
    /// Routes, upstreams, payments as configured when the call arrived: a
    /// reload in the middle of a call does not change them under it.
    pub live: Arc<Live>,
    pub started: Instant,
    /// The clock, read once per call.
    pub now: DateTime<Utc>,
    /// UUIDv7, minted before anything else; keys the usage event.
    pub request_id: String,
    /// Set once credentials resolved, for headers on refusals too.
    pub principal: Option<Principal>,
    pub period: Option<Period>,
    pub snapshot: Option<Snapshot>,
    /// A WebSocket slot taken for this call, released when it ends.
    pub exchange: Exchange,
    pub admitted: Option<Admitted>,
    /// When admission finished, for `paygate_gateway_overhead_seconds`.
    pub decided: Option<Instant>,
    pub upstream_status: Option<u16>,
    /// Targets tried so far, so a retry goes elsewhere.
    pub tried: Vec<Backend>,
    pub body_bytes: u64,
    /// The matched route's id, the `route` label of the call's metrics.
    pub route_label: Option<Arc<str>>,
    /// An upgraded WebSocket: its lease and its units.
    pub ws: Option<Arc<WsConnection>>,
    /// Where its upstream's messages start.
    pub frames: FrameReader,
    /// An x402 payment that passed its checks; it pays for this call.
    pub paid: Option<PaidCall>,
    /// How that payment ended, for the ledger.
    pub payment: Option<paygate_core::Payment>,
    /// What admission decided (`admitted`, an error code, `preflight`, `me`),
    /// for the access log.
    pub decision: &'static str,
    /// The route has `cors`: every answer says `Vary: Origin`.
    pub cors_route: bool,
    /// The caller's `Origin`, when the route's CORS lists it.
    pub cors_origin: Option<String>,
    /// The route's response cache: what the call found there.
    pub cache: Lookup,
    /// A missed answer being kept.
    pub fill: Option<Fill>,
    /// When the request went to the upstream, and how long its answer's
    /// head took to come back.
    pub upstream_sent: Option<Instant>,
    pub upstream_took: Option<std::time::Duration>,
    /// `[tracing]`: the call's span, and its upstream span while the
    /// upstream is asked.
    pub span: Option<tracing::Span>,
    pub upstream_span: Option<tracing::Span>,
}

impl CallCtx {
    /// Whether this call came with an x402 payment that passed its checks
    /// (the route's price, not quota or credits, pays for it).
    pub fn paid_call(&self) -> bool {
        self.paid.is_some()
    }

    pub fn new(live: Arc<Live>) -> Self {
        Self {
            live,
            started: Instant::now(),
            now: Utc::now(),
            request_id: uuid::Uuid::now_v7().to_string(),
            principal: None,
            period: None,
            snapshot: None,
            exchange: Exchange::Http,
            admitted: None,
            decided: None,
            upstream_status: None,
            tried: Vec::new(),
            body_bytes: 0,
            route_label: None,
            ws: None,
            frames: FrameReader::default(),
            paid: None,
            payment: None,
            decision: "",
            cors_route: false,
            cors_origin: None,
            cache: Lookup::Bypass,
            fill: None,
            upstream_sent: None,
            upstream_took: None,
            span: None,
            upstream_span: None,
        }
    }

    /// `RateLimit-*`, `X-Quota-*`, `X-Credits-Remaining`, once the caller
    /// and its counters are known; the CORS headers for a listed origin.
    pub(crate) fn where_you_stand(&self, out: &mut impl HeaderSink) {
        if self.cors_route {
            // Beside the upstream's own `Vary`, which a cache still needs.
            out.add("vary", "Origin".to_string());
        }
        if let Some(origin) = &self.cors_origin {
            for (name, value) in cors::answer_headers(origin) {
                out.set(name, value.to_string());
            }
        }
        if let (Some(p), Some(snap), Some(period)) = (&self.principal, &self.snapshot, &self.period)
        {
            headers::limit_headers(out, &p.plan, snap, period, self.now);
        }
    }
}
