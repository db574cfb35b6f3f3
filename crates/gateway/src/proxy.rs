//! The Pingora phases, in the order a call meets them. Each phase is glue
//! around the modules that do the work:
//!
//! - `request_filter`: the admission steps, in the documented order
//!   (sizes → route → credentials → entitlement → WebSocket slot → rate
//!   limit, quota and credits in one store call). A step's refusal is
//!   answered in one place and never reaches an upstream. A CORS preflight
//!   is answered before any of it; an admitted call that the route's cache
//!   holds is answered from there.
//! - `upstream_peer` / `fail_to_connect`: pick a healthy target; a failed
//!   connect of an idempotent call is retried on another one.
//! - `upstream_request_filter`: header hygiene, then identity headers.
//! - `response_filter`: where-you-stand headers; a cacheable answer
//!   starts being kept (`response_body_filter` keeps its body).
//! - `fail_to_proxy`: the JSON answer for a failed attempt (`outcome`).
//! - `logging`: the access log line; one usage event per admitted call; a
//!   non-billable outcome gives its reservation back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use ipnet::IpNet;
use paygate_config::OnUnavailable;
use paygate_core::metering::limits_for;
use paygate_core::{ErrorCode, PaymentState, UsageEvent};
use paygate_metrics::Metrics;
use paygate_store::{Catalog, MemoryStore, Reservation, Store};
use paygate_usage::UsageSink;
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

mod paid_calls;

use crate::access_log;
use crate::admission::{self, ReservedIn};
use crate::auth::{Authenticator, Provisioner};
use crate::cache::{Cached, Lookup};
use crate::ctx::{Admitted, CallCtx};
use crate::live::{Live, Reloadable};
use crate::outcome::{self, Billing};
use crate::payment::{self, Payments};
use crate::refusal::Refusal;
use crate::routing::RouteMatch;
use crate::sizes::{self, SizeLimits};
use crate::store::StoreHandle;
use crate::websocket::{self, Exchange};
use crate::ws_meter::{self, WsConnection};
use crate::{cors, entitlement, headers, me, respond};

/// Everything the gateway needs, built once at start.
pub struct GatewayDeps {
    /// Routes, upstreams, x402 settings and JWT issuers (empty: every JWT
    /// is refused): what a reload swaps.
    pub reloadable: Reloadable,
    pub catalog: Arc<Catalog>,
    /// Creates or moves customers named by JWTs (`default_plan`, `plan_claim`).
    pub provisioner: Arc<dyn Provisioner>,
    pub store: Arc<dyn Store>,
    pub on_unavailable: OnUnavailable,
    pub usage: UsageSink,
    pub metrics: Metrics,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: u64,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    /// The control runtime: store calls made for open WebSockets, which the
    /// (synchronous) body filter cannot await.
    pub background: tokio::runtime::Handle,
    /// How long a WebSocket message may wait for its units to be reserved.
    pub ws_wait: Duration,
    /// `[log] access`: one access log line per call.
    pub access_log: bool,
    /// `[tracing]`: spans for each call (`trace`).
    pub tracing: bool,
}

pub struct Gateway {
    /// The configuration a new call takes (`Live`).
    live: Arc<arc_swap::ArcSwap<Live>>,
    auth: Authenticator,
    store: StoreHandle,
    /// Per-node limiter for `on_unavailable = "local"`.
    fallback: MemoryStore,
    on_unavailable: OnUnavailable,
    usage: UsageSink,
    metrics: Metrics,
    trusted_proxies: Vec<IpNet>,
    sizes: SizeLimits,
    /// `paygate_decisions_total{decision="admitted"}`, resolved once: it is
    /// counted on every call.
    admitted: prometheus::IntCounter,
    background: tokio::runtime::Handle,
    ws_wait: Duration,
    access_log: bool,
    tracing: bool,
    /// Forwards paid x402 calls, whose answers are held (`paid`).
    connector: Connector,
}

/// What admission decided, when it did not refuse.
enum Next {
    /// Forward the call upstream.
    Proxy,
    /// `/paygate/v1/me`: answer it here with this body.
    Answer(String),
    /// A verified x402 payment pays for the call: forward it, hold the
    /// answer, settle, then answer.
    Pay,
    /// A CORS preflight: answered 204 with these headers.
    Preflight(Vec<(&'static str, String)>),
}

impl Gateway {
    pub fn new(d: GatewayDeps) -> Self {
        Self {
            admitted: d.metrics.decisions.with_label_values(&["admitted"]),
            store: StoreHandle::new(d.store, d.metrics.store_errors.clone()),
            fallback: MemoryStore::new(),
            sizes: SizeLimits {
                max_uri_bytes: d.max_uri_bytes,
                max_header_bytes: d.max_header_bytes,
                max_body_bytes: d.max_body_bytes,
            },
            live: d.reloadable.live,
            auth: Authenticator {
                catalog: d.catalog,
                issuers: d.reloadable.issuers,
                provisioner: d.provisioner,
            },
            on_unavailable: d.on_unavailable,
            usage: d.usage,
            metrics: d.metrics,
            trusted_proxies: d.trusted_proxies,
            background: d.background,
            ws_wait: d.ws_wait,
            access_log: d.access_log,
            tracing: d.tracing,
            connector: Connector::new(None),
        }
    }

    /// The admission steps, in the order the caller is told about them;
    /// each either passes what the next needs or refuses.
    async fn admit(&self, req: &RequestHeader, ctx: &mut CallCtx) -> Result<Next, Refusal> {
        let live = Arc::clone(&ctx.live);
        sizes::check(req, &self.sizes)?;
        if me::is_me(req) {
            return self.me(req, ctx).await;
        }
        if cors::is_preflight(req) {
            if let Some(answer) = preflight(&live, req, ctx) {
                return Ok(answer);
            }
        }
        let route = crate::routing::route(
            &live.routes,
            req.uri.path(),
            &req.method,
            &mut ctx.route_label,
        )?;
        if let Some(cors) = &route.cors {
            ctx.cors_route = true;
            ctx.cors_origin = cors.allowed_origin(req);
        }
        let offer = match (&live.payments, &route.x402) {
            (Some(payments), Some(price)) => payments.offer(&route, price, req),
            _ => None,
        };
        let sent = match offer {
            Some(_) => payment::sent(req)?,
            None => None,
        };
        let principal = match self.auth.authenticate(&req.headers).await {
            Ok(p) => p,
            // No credentials on a priced route: the payment pays, or the
            // caller is offered one.
            Err(r) => {
                return match (offer, sent) {
                    (Some(offer), Some(sent)) if r.code == ErrorCode::MissingCredentials => {
                        self.admit_paid(req, ctx, route, offer, sent).await
                    }
                    (Some(offer), None) if r.code == ErrorCode::MissingCredentials => {
                        Err(Payments::payment_required(&offer, &ctx.request_id))
                    }
                    _ => Err(r),
                }
            }
        };
        // A customer who sends a payment pays for this call with it.
        let offer = match (offer, sent) {
            (Some(offer), Some(sent)) => {
                ctx.principal = Some(principal);
                return self.admit_paid(req, ctx, route, offer, sent).await;
            }
            (offer, _) => offer,
        };
        let principal = ctx.principal.insert(principal);
        let (limits, period) =
            limits_for(&principal.plan, route.cost, &principal.customer, ctx.now);
        ctx.period = Some(period);
        entitlement::check(principal, &route, &self.store, &limits, &mut ctx.snapshot).await?;
        ctx.exchange = websocket::take_slot(req, principal, &self.store, &ctx.request_id).await?;
        let customer = principal.customer.id.as_str();
        let admit = admission::admit(
            &self.store,
            &self.fallback,
            self.on_unavailable,
            customer,
            &limits,
            &mut ctx.snapshot,
        )
        .await
        // A customer out of quota or credits may pay for this call instead.
        .map_err(|r| Payments::offer_on(r, offer.as_ref()))?;
        ctx.admitted = Some(Admitted {
            route,
            reservation: admit.reservation,
            reserved_in: admit.reserved_in,
        });
        Ok(Next::Proxy)
    }

    /// Header hygiene, then the identity headers: what the upstream sees of
    /// any forwarded call.
    fn prepare_upstream_request(
        &self,
        session: &Session,
        up: &mut RequestHeader,
        ctx: &CallCtx,
    ) -> Result<()> {
        headers::sanitize_for_upstream(up, ctx.exchange == Exchange::WebSocket);
        headers::forwarded_for(up, client_ip(session), &self.trusted_proxies);
        up.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(p) = &ctx.principal {
            up.insert_header("x-paygate-customer", p.customer.id.as_str())?;
            up.insert_header("x-paygate-plan", p.plan.id.as_str())?;
        }
        Ok(())
    }

    /// An admitted GET whose answer the route's cache holds is answered
    /// from it, as a forwarded call would be (billed the same way).
    async fn answer_from_cache(&self, session: &mut Session, ctx: &mut CallCtx) -> Result<bool> {
        let Some(cache) = ctx.admitted.as_ref().and_then(|a| a.route.cache.as_ref()) else {
            return Ok(false);
        };
        let (Some(p), Exchange::Http) = (&ctx.principal, ctx.exchange) else {
            return Ok(false);
        };
        ctx.cache = cache.lookup(session.req_header(), p.plan.id.as_str());
        let Lookup::Hit(hit) = &ctx.cache else {
            return Ok(false);
        };
        let hit = Arc::clone(hit);
        ctx.upstream_status = Some(hit.status);
        self.write_cached(session, ctx, &hit).await?;
        Ok(true)
    }

    async fn write_cached(&self, session: &mut Session, ctx: &CallCtx, hit: &Cached) -> Result<()> {
        let mut resp = ResponseHeader::build(hit.status, Some(hit.headers.len() + 12))?;
        for (name, value) in &hit.headers {
            resp.append_header(name.clone(), value.clone())?;
        }
        resp.insert_header("content-length", hit.body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        resp.insert_header("x-cache", ctx.cache.label())?;
        ctx.where_you_stand(&mut resp);
        // Only GETs are looked up: the answer always has its body.
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(hit.body.clone()), true)
            .await
    }

    async fn me(&self, req: &RequestHeader, ctx: &mut CallCtx) -> Result<Next, Refusal> {
        let (principal, period, snap, balance) =
            me::balance(req, &self.auth, &self.store, ctx.now).await?;
        ctx.principal = Some(principal);
        ctx.period = Some(period);
        ctx.snapshot = Some(snap);
        Ok(Next::Answer(
            serde_json::to_string(&balance).unwrap_or_default(),
        ))
    }

    /// The one place a refusal is answered: the JSON error body and every
    /// header known by then. Whatever an earlier step took (a WebSocket
    /// slot) is given back.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut CallCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        ctx.decision = refusal.decision();
        self.metrics
            .decisions
            .with_label_values(&[refusal.decision()])
            .inc();
        if let Some(p) = &ctx.principal {
            self.release_websocket(&mut ctx.exchange, p.customer.id.as_str(), &ctx.request_id)
                .await;
        }
        if sizes::has_body(session.req_header()) {
            // The unread body would be taken for the next request.
            session.set_keepalive(None);
        }
        let body = refusal.body(&ctx.request_id);
        respond::json(
            session,
            ctx,
            refusal.code.status(),
            body,
            &refusal.headers(),
        )
        .await?;
        if sizes::has_body(session.req_header()) {
            // What a caller may send anyway, and at least 1 MiB.
            let cap = self.sizes.max_body_bytes.saturating_mul(2).max(1 << 20);
            respond::drain_refused_upload(session, cap).await;
        }
        Ok(true)
    }

    /// Frees the WebSocket slot a call took (its lease is the request id),
    /// in the store it was taken from.
    async fn release_websocket(&self, exchange: &mut Exchange, customer: &str, lease: &str) {
        if std::mem::take(exchange) == Exchange::WebSocket {
            // A failure is counted in `paygate_store_errors_total`; the lease
            // then expires on its own.
            let _ = self.store.close_websocket(customer, lease).await;
        }
    }

    /// An upgrade the upstream accepted: its lease is renewed and its
    /// units metered from now on.
    fn open_websocket(&self, ctx: &mut CallCtx) {
        let (Some(p), Some(a)) = (&ctx.principal, &ctx.admitted) else {
            return;
        };
        let terms = ws_meter::Terms {
            principal: p.clone(),
            request_id: ctx.request_id.clone(),
            route: Arc::clone(&a.route.id),
            message_cost: u64::from(a.route.ws_message_cost),
            minute_cost: u64::from(a.route.ws_minute_cost),
        };
        let services = ws_meter::Services {
            store: self.store.clone(),
            usage: self.usage.clone(),
            background: self.background.clone(),
            wait: self.ws_wait,
        };
        ctx.ws = Some(WsConnection::open(terms, services));
    }

    fn log_access(&self, session: &Session, ctx: &CallCtx, status: u16, total: Duration) {
        let req = session.req_header();
        let customer = match (&ctx.principal, &ctx.paid) {
            (Some(p), _) => p.customer.id.as_str(),
            (None, Some(paid)) => paid.accepted.identity.payer.as_str(),
            (None, None) => "",
        };
        access_log::write(&access_log::Line {
            request_id: &ctx.request_id,
            method: req.method.as_str(),
            target: req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            route: ctx.route_label.as_deref().unwrap_or(""),
            status,
            decision: ctx.decision,
            customer,
            headers: &req.headers,
            cache: ctx.cache.label(),
            upstream: ctx.upstream_took,
            total,
        });
    }

    /// Gives back what a non-billable call reserved, where it reserved it.
    async fn give_back(&self, customer: &str, a: &Admitted) {
        match a.reserved_in {
            ReservedIn::Store => {
                let _ = self.store.give_back(customer, &a.reservation).await;
            }
            ReservedIn::Fallback => {
                let _ = self.fallback.give_back(customer, &a.reservation).await;
            }
            ReservedIn::Nowhere => {}
        }
    }
}

/// A preflight on a route with `cors`: its answer, whatever the method
/// asked for (the browser checks the allowed methods itself).
fn preflight(live: &Live, req: &RequestHeader, ctx: &mut CallCtx) -> Option<Next> {
    let route = match live.routes.find(req.uri.path(), &req.method) {
        RouteMatch::Found(r) | RouteMatch::MethodNotAllowed(r) => r,
        RouteMatch::NoRoute => return None,
    };
    let cors = route.cors.as_ref()?;
    ctx.route_label = Some(Arc::clone(&route.id));
    Some(Next::Preflight(
        cors.preflight_headers(cors.allowed_origin(req)),
    ))
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
        CallCtx::new(self.live.load_full())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut CallCtx) -> Result<bool> {
        let admitted = match self.tracing {
            false => self.admit(session.req_header(), ctx).await,
            true => {
                let call = crate::trace::call(session.req_header(), &ctx.request_id);
                let span = crate::trace::admission(&call);
                ctx.span = Some(call);
                tracing::Instrument::instrument(self.admit(session.req_header(), ctx), span).await
            }
        };
        match admitted {
            Ok(Next::Proxy) => {
                ctx.decided = Some(Instant::now());
                ctx.decision = "admitted";
                self.admitted.inc();
                if self.answer_from_cache(session, ctx).await? {
                    return Ok(true);
                }
                if ctx.exchange == Exchange::WebSocket {
                    // Pingora reads a client's body with a 60 s deadline, and
                    // may start that read (for the upgraded stream) before
                    // the 101 reaches `response_filter`: a WebSocket client
                    // may stay quiet longer than that.
                    session.set_read_timeout(None);
                }
                Ok(false)
            }
            Ok(Next::Answer(body)) => {
                ctx.decision = "me";
                respond::json(session, ctx, 200, body, &[]).await?;
                Ok(true)
            }
            Ok(Next::Preflight(headers)) => {
                ctx.decision = "preflight";
                self.metrics
                    .decisions
                    .with_label_values(&["preflight"])
                    .inc();
                respond::empty(session, ctx, 204, &headers).await?;
                Ok(true)
            }
            Ok(Next::Pay) => {
                ctx.decision = "admitted";
                self.admitted.inc();
                self.serve_paid(session, ctx).await?;
                Ok(true)
            }
            Err(refusal) => self.refuse(session, ctx, refusal).await,
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
            if ctx.body_bytes > self.sizes.max_body_bytes {
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
        let pool = ctx.admitted.as_ref().map(|a| Arc::clone(&a.route.upstream));
        let Some(pool) = pool else {
            return Error::e_explain(
                ErrorType::InternalError,
                "call reached upstream selection unadmitted",
            );
        };
        match pool.select(&ctx.tried) {
            Some((backend, mut peer)) => {
                ctx.tried.push(backend);
                if ctx.exchange == Exchange::WebSocket {
                    // `read_timeout_ms` bounds the wait for an answer; an open
                    // WebSocket may be quiet for as long as its peers like
                    // (its lease and units are kept by the ticker).
                    peer.options.read_timeout = None;
                }
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
        let pool_size = ctx.admitted.as_ref().map_or(0, |a| a.route.upstream.size());
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
        self.prepare_upstream_request(session, upstream_request, ctx)?;
        if let Some(call) = &ctx.span {
            ctx.upstream_span = Some(crate::trace::upstream(call, upstream_request));
        }
        ctx.upstream_sent = Some(Instant::now());
        if let Some(d) = ctx.decided {
            self.metrics
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
        ctx.upstream_took = ctx.upstream_sent.map(|t| t.elapsed());
        if let Some(span) = ctx.upstream_span.take() {
            span.record(
                "http.response.status_code",
                upstream_response.status.as_u16(),
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut CallCtx,
    ) -> Result<()> {
        if let Lookup::Miss(key) = &ctx.cache {
            // Kept as the upstream sent it, before paygate's own headers.
            let cache = ctx.admitted.as_ref().and_then(|a| a.route.cache.as_ref());
            ctx.fill = cache.and_then(|c| c.fill(key.clone(), upstream_response));
            upstream_response.insert_header("x-cache", ctx.cache.label())?;
        }
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        ctx.where_you_stand(upstream_response);
        if ctx.exchange == Exchange::WebSocket && upstream_response.status.as_u16() == 101 {
            // Pingora reads a client's body with a 60 s deadline; a WebSocket
            // client may stay quiet longer than that.
            session.set_read_timeout(None);
            self.open_websocket(ctx);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut CallCtx,
    ) -> Result<Option<Duration>> {
        if let Some(ws) = &ctx.ws {
            ws.upstream_bytes(&mut ctx.frames, body);
        }
        if let Some(fill) = &mut ctx.fill {
            if body.as_ref().is_some_and(|b| !fill.push(b)) {
                ctx.fill = None;
            }
            if end_of_stream {
                let cache = ctx.admitted.as_ref().and_then(|a| a.route.cache.as_ref());
                if let (Some(cache), Some(fill)) = (cache, ctx.fill.take()) {
                    cache.store(fill);
                }
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut CallCtx,
    ) -> FailToProxy {
        let error_code = match outcome::failure_code(e.etype(), e.esource()) {
            // The response already started: nothing more can be said.
            Some(_) if session.response_written().is_some() => 0,
            Some(code) => {
                // Pingora closes the connection after a failed proxy attempt;
                // say so (`Connection: close`), so clients do not reuse a dead socket.
                session.set_keepalive(None);
                let body = code.body(outcome::failure_message(code), &ctx.request_id);
                let _ = respond::json(session, ctx, code.status(), body, &[]).await;
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
        let m = &self.metrics;
        let plan_label = ctx.principal.as_ref().map_or("", |p| p.plan.id.as_str());
        let route_label = ctx.route_label.as_deref().unwrap_or("");
        m.requests
            .with_label_values(&[route_label, plan_label, status_label(status)])
            .inc();
        let latency = ctx.started.elapsed();
        m.request_duration.observe(latency.as_secs_f64());
        if self.access_log {
            self.log_access(session, ctx, status, latency);
        }
        if let Some(span) = ctx.span.take() {
            span.record("http.response.status_code", status);
            span.record("paygate.decision", ctx.decision);
            if let Some(route) = &ctx.route_label {
                span.record("http.route", route.as_ref());
            }
            if let Some(p) = &ctx.principal {
                span.record("paygate.customer", p.customer.id.as_str());
            }
            ctx.upstream_span = None;
        }

        let Some(a) = ctx.admitted.take() else {
            return;
        };
        // A call is billed to its customer, or to the payer of an x402
        // payment without credentials (grouped by address in reports).
        let (customer, key_id, plan_id) = match (&ctx.principal, &ctx.paid) {
            (Some(p), _) => (
                p.customer.id.as_str().to_owned(),
                p.key_id().to_owned(),
                p.plan.id.as_str().to_owned(),
            ),
            (None, Some(paid)) => (
                format!("x402:{}", paid.accepted.identity.payer),
                "x402".into(),
                "x402".into(),
            ),
            (None, None) => return,
        };
        if let Some(ws) = ctx.ws.take() {
            ws.finish().await;
        }
        let billing = match &ctx.payment {
            // Paid calls: served exactly when the payment settled.
            Some(pay) if pay.state == PaymentState::Settled => Billing::Billable,
            Some(_) => Billing::NotBillable,
            None if ctx.paid_call() => Billing::NotBillable,
            None => outcome::billing(ctx.upstream_status, e.map(|e| e.esource())),
        };
        if billing == Billing::NotBillable {
            self.give_back(&customer, &a).await;
        }
        self.release_websocket(&mut ctx.exchange, &customer, &ctx.request_id)
            .await;
        let payment = ctx.payment.take();
        // A paid call spends neither quota nor credits: its money is the payment.
        let (billable, r, units) = match billing {
            Billing::Billable if payment.is_some() => (true, Reservation::default(), 0),
            Billing::Billable => (true, a.reservation, a.route.cost.into()),
            Billing::NotBillable => (false, Reservation::default(), 0),
        };
        let period = match &ctx.period {
            Some(t) => t.name(),
            None => ctx.now.format("%Y-%m").to_string(),
        };
        self.usage
            .emit(UsageEvent {
                request_id: std::mem::take(&mut ctx.request_id),
                ts: ctx.now,
                customer_id: customer,
                key_id,
                plan_id,
                route: a.route.id.to_string(),
                method: session.req_header().method.as_str().to_owned(),
                status,
                billable,
                units,
                overage_units: r.overage_units,
                amount_micros: r.amount_micros(),
                credits_micros: r.credits_micros,
                period,
                latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                payment,
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
