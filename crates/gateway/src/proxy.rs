//! The Pingora phases, in the order a call meets them. Each phase is glue:
//!
//! - `request_filter`: size limits → route → credentials → entitlement →
//!   WebSocket slot → one store call (rate limit + quota + credits). Refusals
//!   are answered here and never reach an upstream.
//! - `upstream_peer` / `fail_to_connect`: pick a healthy target; a failed
//!   connect of an idempotent call is retried on another one.
//! - `upstream_request_filter`: header hygiene, then identity headers.
//! - `response_filter`: where-you-stand headers.
//! - `logging`: one usage event per admitted call; a non-billable outcome
//!   gives its reservation back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use paygate_billing::UsageSink;
use paygate_config::OnUnavailable;
use paygate_core::period::Period;
use paygate_core::{ErrorCode, UsageEvent};
use paygate_metrics::Metrics;
use paygate_store::{MemoryStore, Principal, Reservation, Snapshot, Store, WebsocketSlot};
use pingora::http::ResponseHeader;
use pingora::lb::Backend;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::admission::{self, ReservedIn, Verdict};
use crate::auth;
use crate::headers::{self, HeaderSink};
use crate::me;
use crate::refusal::Refusal;
use crate::routing::{Route, RouteMatch, RouteTable};
use crate::upstream::Upstreams;

/// Everything the gateway needs, built once at start.
pub struct GatewayDeps {
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub catalog: Arc<paygate_store::Catalog>,
    pub store: Arc<dyn Store>,
    pub on_unavailable: OnUnavailable,
    pub usage: UsageSink,
    pub metrics: Metrics,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: u64,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
}

pub struct Gateway {
    deps: GatewayDeps,
    /// Per-node limiter for `on_unavailable = "local"`.
    fallback: MemoryStore,
    /// `paygate_decisions_total{decision="admitted"}`, resolved once: it is
    /// counted on every call.
    admitted: prometheus::IntCounter,
}

impl Gateway {
    pub fn new(deps: GatewayDeps) -> Self {
        let admitted = deps.metrics.decisions.with_label_values(&["admitted"]);
        Self {
            deps,
            fallback: MemoryStore::new(),
            admitted,
        }
    }
}

/// An admitted call's state, carried to `logging`.
pub struct Admitted {
    principal: Principal,
    route: Arc<Route>,
    period: Period,
    reservation: Reservation,
    reserved_in: ReservedIn,
    websocket: bool,
}

/// Per-call state.
pub struct CallCtx {
    started: Instant,
    now: DateTime<Utc>,
    request_id: String,
    /// Set once credentials resolved, for headers on refusals too.
    principal: Option<Principal>,
    period: Option<Period>,
    snapshot: Option<Snapshot>,
    admitted: Option<Admitted>,
    decided: Option<Instant>,
    upstream_status: Option<u16>,
    tried: Vec<Backend>,
    body_bytes: u64,
    route_label: Option<Arc<str>>,
}

impl Gateway {
    fn store_for(&self, at: ReservedIn) -> Option<&dyn Store> {
        match at {
            ReservedIn::Store => Some(self.deps.store.as_ref()),
            ReservedIn::Fallback => Some(&self.fallback),
            ReservedIn::Nowhere => None,
        }
    }

    /// The request-size checks that come before anything else.
    fn check_sizes(&self, req: &RequestHeader) -> Option<Refusal> {
        if req.raw_path().len() > self.deps.max_uri_bytes {
            return Some(Refusal::new(
                ErrorCode::UriTooLong,
                "the request target is too long",
            ));
        }
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.deps.max_header_bytes {
            return Some(Refusal::new(
                ErrorCode::HeadersTooLarge,
                "the request headers are too large",
            ));
        }
        let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
        let (first, second) = (lengths.next(), lengths.next());
        if second.is_some() {
            return Some(Refusal::new(
                ErrorCode::BadRequest,
                "more than one Content-Length",
            ));
        }
        let len = first?;
        if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
            return Some(Refusal::new(
                ErrorCode::BadRequest,
                "Content-Length and Transfer-Encoding together",
            ));
        }
        match len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) if n > self.deps.max_body_bytes => Some(Refusal::new(
                ErrorCode::BodyTooLarge,
                "the request body is too large",
            )),
            Some(_) => None,
            None => Some(Refusal::new(
                ErrorCode::BadRequest,
                "invalid Content-Length",
            )),
        }
    }

    /// Answers the call ourselves with the JSON error body and every header we know.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut CallCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        self.deps
            .metrics
            .decisions
            .with_label_values(&[refusal.decision()])
            .inc();
        let body = refusal.code.body(&refusal.message, &ctx.request_id);
        let mut resp = ResponseHeader::build(refusal.code.status(), Some(8))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if matches!(
            refusal.code,
            ErrorCode::MissingCredentials | ErrorCode::InvalidCredentials
        ) {
            resp.insert_header("www-authenticate", "Bearer")?;
        }
        if let Some(secs) = refusal.retry_after_secs {
            resp.insert_header("retry-after", secs.to_string())?;
        }
        self.where_you_stand(&mut resp, ctx);
        if has_body(session.req_header()) {
            // The unread body would be taken for the next request.
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
        Ok(true)
    }

    fn where_you_stand(&self, out: &mut impl HeaderSink, ctx: &CallCtx) {
        if let (Some(p), Some(snap), Some(period)) = (&ctx.principal, &ctx.snapshot, &ctx.period) {
            headers::limit_headers(out, &p.plan, snap, period, ctx.now);
        }
    }

    async fn serve_me(&self, session: &mut Session, ctx: &mut CallCtx) -> Result<bool> {
        let principal = match auth::authenticate(&self.deps.catalog, &session.req_header().headers)
        {
            Ok(p) => p,
            Err(r) => return self.refuse(session, ctx, r).await,
        };
        let (limits, period) =
            admission::limits_for(&principal.plan, 1, &principal.customer, ctx.now);
        let snap = match self
            .deps
            .store
            .peek(principal.customer.id.as_str(), &limits)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.deps.metrics.store_errors.inc();
                let r = Refusal::store_unavailable(e);
                return self.refuse(session, ctx, r).await;
            }
        };
        let body =
            me::balance_json(&principal.customer, &principal.plan, &snap, &period).to_string();
        ctx.snapshot = Some(snap);
        ctx.period = Some(period);
        ctx.principal = Some(principal);
        let mut resp = ResponseHeader::build(200, Some(8))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        self.where_you_stand(&mut resp, ctx);
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
        Ok(true)
    }

    /// Answers a failure after admission (no target, connect error, timeout).
    async fn answer_failure(
        &self,
        session: &mut Session,
        ctx: &CallCtx,
        code: ErrorCode,
        message: &str,
    ) {
        let body = code.body(message, &ctx.request_id);
        let Ok(mut resp) = ResponseHeader::build(code.status(), Some(6)) else {
            return;
        };
        resp.set("content-type", "application/json".into());
        resp.set("content-length", body.len().to_string());
        resp.set("x-request-id", ctx.request_id.clone());
        self.where_you_stand(&mut resp, ctx);
        // Pingora closes the connection after a failed proxy attempt; say so
        // (`Connection: close`), so clients do not reuse a dead socket.
        session.set_keepalive(None);
        if session
            .write_response_header(Box::new(resp), false)
            .await
            .is_ok()
        {
            let _ = session
                .write_response_body(Some(Bytes::from(body)), true)
                .await;
        }
    }
}

fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn is_websocket(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = CallCtx;

    fn new_ctx(&self) -> CallCtx {
        CallCtx {
            started: Instant::now(),
            now: Utc::now(),
            request_id: uuid::Uuid::now_v7().to_string(),
            principal: None,
            period: None,
            snapshot: None,
            admitted: None,
            decided: None,
            upstream_status: None,
            tried: Vec::new(),
            body_bytes: 0,
            route_label: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut CallCtx) -> Result<bool> {
        if let Some(r) = self.check_sizes(session.req_header()) {
            return self.refuse(session, ctx, r).await;
        }
        if session.req_header().uri.path() == me::ME_PATH {
            return self.serve_me(session, ctx).await;
        }
        let route = {
            let req = session.req_header();
            match self.deps.routes.find(req.uri.path(), &req.method) {
                RouteMatch::Found(r) => Arc::clone(r),
                RouteMatch::NoRoute => {
                    let r = Refusal::new(ErrorCode::NoRoute, "no route matches this path");
                    return self.refuse(session, ctx, r).await;
                }
                RouteMatch::MethodNotAllowed(r) => {
                    ctx.route_label = Some(Arc::clone(&r.id));
                    let r = Refusal::new(
                        ErrorCode::MethodNotAllowed,
                        "this route does not take this method",
                    );
                    return self.refuse(session, ctx, r).await;
                }
            }
        };
        ctx.route_label = Some(Arc::clone(&route.id));

        let principal = match auth::authenticate(&self.deps.catalog, &session.req_header().headers)
        {
            Ok(p) => p,
            Err(r) => return self.refuse(session, ctx, r).await,
        };
        let customer_rec = Arc::clone(&principal.customer);
        let customer = customer_rec.id.as_str();
        let (limits, period) =
            admission::limits_for(&principal.plan, route.cost, &principal.customer, ctx.now);
        ctx.period = Some(period);
        ctx.principal = Some(principal.clone());

        if !principal.plan.allows_route(&route.id) {
            // Still tell the caller where it stands.
            if let Ok(s) = self.deps.store.peek(customer, &limits).await {
                ctx.snapshot = Some(s);
            }
            let r = Refusal::new(
                ErrorCode::RouteNotInPlan,
                "your plan does not include this route",
            );
            return self.refuse(session, ctx, r).await;
        }

        let websocket = is_websocket(session.req_header());
        if websocket {
            let max = principal.plan.max_websockets;
            match self.deps.store.open_websocket(customer, max).await {
                Ok(WebsocketSlot::Granted) => {}
                Ok(WebsocketSlot::Full) => {
                    let r = Refusal::new(
                        ErrorCode::TooManyWebsockets,
                        format!("your plan allows {max} concurrent WebSocket connection(s)"),
                    )
                    .retry_after_ms(1000);
                    return self.refuse(session, ctx, r).await;
                }
                Err(e) => {
                    self.deps.metrics.store_errors.inc();
                    let r = Refusal::store_unavailable(e);
                    return self.refuse(session, ctx, r).await;
                }
            }
        }

        let verdict = admission::admit(
            self.deps.store.as_ref(),
            &self.fallback,
            self.deps.on_unavailable,
            customer,
            &limits,
        )
        .await;
        match verdict {
            Verdict::Admit {
                reservation,
                reserved_in,
                snapshot,
            } => {
                if reserved_in != ReservedIn::Store {
                    self.deps.metrics.store_errors.inc();
                }
                ctx.snapshot = snapshot;
                ctx.decided = Some(Instant::now());
                ctx.admitted = Some(Admitted {
                    principal,
                    route,
                    period,
                    reservation,
                    reserved_in,
                    websocket,
                });
                self.admitted.inc();
                Ok(false)
            }
            Verdict::Refuse { refusal, snapshot } => {
                if refusal.code == ErrorCode::LimiterUnavailable {
                    self.deps.metrics.store_errors.inc();
                }
                if websocket {
                    let _ = self.deps.store.close_websocket(customer).await;
                }
                ctx.snapshot = snapshot;
                self.refuse(session, ctx, refusal).await
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut CallCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.deps.max_body_bytes {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut CallCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .admitted
            .as_ref()
            .and_then(|a| self.deps.upstreams.get(a.route.upstream));
        let Some(pool) = pool else {
            return Error::e_explain(
                ErrorType::InternalError,
                "call reached upstream selection unadmitted",
            );
        };
        match pool.select(&ctx.tried) {
            Some((backend, peer)) => {
                ctx.tried.push(backend);
                Ok(Box::new(peer))
            }
            None => Err(Error::create(
                ErrorType::ConnectNoRoute,
                ErrorSource::Upstream,
                Some("no healthy target".into()),
                None,
            )),
        }
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut CallCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let pool_size = ctx
            .admitted
            .as_ref()
            .and_then(|a| self.deps.upstreams.get(a.route.upstream))
            .map_or(0, |p| p.size());
        // A request that never reached a target is safe to send elsewhere only
        // when repeating it is harmless.
        if session.req_header().method.is_idempotent() && ctx.tried.len() < pool_size {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut CallCtx,
    ) -> Result<()> {
        let websocket = ctx.admitted.as_ref().is_some_and(|a| a.websocket);
        headers::sanitize_for_upstream(upstream_request, websocket);
        headers::forwarded_for(
            upstream_request,
            client_ip(session),
            &self.deps.trusted_proxies,
        );
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(a) = &ctx.admitted {
            upstream_request
                .insert_header("x-paygate-customer", a.principal.customer.id.as_str())?;
            upstream_request.insert_header("x-paygate-plan", a.principal.plan.id.as_str())?;
        }
        if let Some(d) = ctx.decided {
            self.deps
                .metrics
                .gateway_overhead
                .observe((d - ctx.started).as_secs_f64());
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut CallCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut CallCtx,
    ) -> Result<()> {
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        self.where_you_stand(upstream_response, ctx);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut CallCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(413) => Some(ErrorCode::BodyTooLarge),
            ErrorType::HTTPStatus(s) if *s >= 500 => Some(ErrorCode::UpstreamUnavailable),
            ErrorType::HTTPStatus(_) => Some(ErrorCode::BadRequest),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if *e.esource() == ErrorSource::Upstream =>
            {
                Some(ErrorCode::UpstreamTimeout)
            }
            ErrorType::ConnectTimedout => Some(ErrorCode::UpstreamUnavailable),
            _ => match e.esource() {
                ErrorSource::Upstream => Some(ErrorCode::UpstreamUnavailable),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    _ => Some(ErrorCode::BadRequest),
                },
                ErrorSource::Internal | ErrorSource::Unset => Some(ErrorCode::Internal),
            },
        };
        let error_code = match code {
            // The response already started: nothing more can be said.
            Some(_) if session.response_written().is_some() => 0,
            Some(code) => {
                let message = match code {
                    ErrorCode::UpstreamTimeout => "the upstream did not answer in time",
                    ErrorCode::UpstreamUnavailable => {
                        "no healthy upstream target could take the call"
                    }
                    ErrorCode::BodyTooLarge => "the request body is too large",
                    ErrorCode::BadRequest => "the request is malformed",
                    _ => "internal error",
                };
                self.answer_failure(session, ctx, code, message).await;
                code.status()
            }
            None => 0,
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut CallCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let m = &self.deps.metrics;
        let plan_label = ctx.principal.as_ref().map_or("", |p| p.plan.id.as_str());
        let route_label = ctx.route_label.as_deref().unwrap_or("");
        m.requests
            .with_label_values(&[route_label, plan_label, status_label(status)])
            .inc();
        let latency = ctx.started.elapsed();
        m.request_duration.observe(latency.as_secs_f64());

        let Some(a) = ctx.admitted.take() else {
            return;
        };
        let customer = a.principal.customer.id.as_str();
        // Billable: the upstream answered below 500 and the exchange completed;
        // only the client walking away afterwards is still the client's call.
        let completed = e.is_none_or(|e| *e.esource() == ErrorSource::Downstream);
        let billable = ctx.upstream_status.is_some_and(|s| s < 500) && completed;
        if let Some(store) = self.store_for(a.reserved_in) {
            if !billable && store.give_back(customer, &a.reservation).await.is_err() {
                m.store_errors.inc();
            }
            if a.websocket && store.close_websocket(customer).await.is_err() {
                m.store_errors.inc();
            }
        }
        let r = if billable {
            a.reservation
        } else {
            Reservation::default()
        };
        self.deps
            .usage
            .emit(UsageEvent {
                request_id: std::mem::take(&mut ctx.request_id),
                ts: ctx.now,
                customer_id: customer.to_owned(),
                key_id: a.principal.key.id.as_str().to_owned(),
                plan_id: a.principal.plan.id.as_str().to_owned(),
                route: a.route.id.to_string(),
                method: session.req_header().method.as_str().to_owned(),
                status,
                billable,
                units: if billable { a.route.cost.into() } else { 0 },
                overage_units: r.overage_units,
                amount_micros: r.amount_micros(),
                credits_micros: r.credits_micros,
                period: a.period.name(),
                latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            })
            .await;
    }
}

/// Status codes as static labels, so the hot path does not format numbers:
/// the common codes exactly, the rest by class.
#[allow(clippy::match_overlapping_arm)]
fn status_label(status: u16) -> &'static str {
    match status {
        0 => "0",
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        414 => "414",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
