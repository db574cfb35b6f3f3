//! x402 calls inside the Pingora phases: admitting a call that carries a
//! payment (`admit_paid`), and serving it (`serve_paid`): forwarded here,
//! its answer held until the payment settled, then released, or replaced by
//! the refusal that settlement ended in. `payment` and `paid` do the work;
//! this is the glue to the gateway's store, limits and response writer.

use std::sync::Arc;
use std::time::Instant;

use paygate_core::metering::limits_for;
use paygate_core::{ErrorCode, Payment, PaymentState};
use paygate_store::Limits;
use pingora::prelude::*;
use pingora::ErrorType;

use super::{Gateway, Next};
use crate::admission;
use crate::ctx::{Admitted, CallCtx};
use crate::entitlement;
use crate::outcome;
use crate::paid::{self, Held, NotHeld, Settlement};
use crate::payment::Payments;
use crate::refusal::Refusal;
use crate::respond;
use crate::routing::Route;
use crate::websocket;

impl Gateway {
    /// A call that carries an x402 payment: the payment pays for it instead
    /// of quota or credits. The caller's rate limit still applies: the
    /// plan's for a customer, the route's per payer address otherwise.
    pub(super) async fn admit_paid(
        &self,
        req: &RequestHeader,
        ctx: &mut CallCtx,
        route: Arc<Route>,
        offer: paygate_x402::offer::Offer,
        sent: paygate_x402::header::Sent,
    ) -> Result<Next, Refusal> {
        let payments = ctx.live.payments.clone();
        let (Some(payments), Some(price)) = (payments, route.x402) else {
            return Err(Refusal::new(ErrorCode::Internal, "x402 is not configured"));
        };
        if websocket::is_upgrade(req) {
            return Err(Refusal::new(
                ErrorCode::InvalidPayment,
                "x402 pays for single HTTP calls, not for WebSocket connections",
            ));
        }
        let now = u64::try_from(ctx.now.timestamp()).unwrap_or(0);
        let paid = Payments::check(offer, sent, now)?;
        let (key, limits) = match &ctx.principal {
            Some(p) => {
                let (full, period) = limits_for(&p.plan, route.cost, &p.customer, ctx.now);
                ctx.period = Some(period);
                entitlement::check(p, &route, &self.store, &full, &mut ctx.snapshot).await?;
                let rate_only = Limits {
                    quota: None,
                    credit_price_micros: None,
                    ..full
                };
                (p.customer.id.as_str().to_owned(), rate_only)
            }
            None => {
                let rate = price.payer_rate_limit;
                let key = format!("x402:{}:{}", route.id, paid.accepted.identity.payer);
                // A failure here shows again, and is decided, at admission.
                let _ = self.store.ensure_counters(&key).await;
                let limits = Limits {
                    emission_interval_ns: rate.emission_interval_ns(),
                    capacity: rate.capacity(),
                    units: 1,
                    quota: None,
                    credit_price_micros: None,
                };
                (key, limits)
            }
        };
        let admit = admission::admit(
            &self.store,
            &self.fallback,
            self.on_unavailable,
            &key,
            &limits,
            &mut ctx.snapshot,
        )
        .await?;
        if let Some(p) = &ctx.principal {
            // The rate-only answer says nothing of quota or credits.
            let (full, _) = limits_for(&p.plan, route.cost, &p.customer, ctx.now);
            ctx.snapshot = self.store.peek(&key, &full).await.ok().or(ctx.snapshot);
        }
        Payments::claim(&self.store, &paid, now).await?;
        payments.verify(&self.store, &paid).await?;
        ctx.paid = Some(paid);
        ctx.admitted = Some(Admitted {
            route,
            reservation: admit.reservation,
            reserved_in: admit.reserved_in,
        });
        Ok(Next::Pay)
    }

    /// Forwards a paid call, holds the answer, settles, then answers: the
    /// held answer with the settlement's header when it settled, the
    /// upstream's answer unsettled when it was 400 or more, a 402 when the
    /// facilitator refused to settle, a 504 when it never said.
    pub(super) async fn serve_paid(&self, session: &mut Session, ctx: &mut CallCtx) -> Result<()> {
        let (Some(payments), Some(paid), Some(a)) =
            (ctx.live.payments.clone(), ctx.paid.clone(), &ctx.admitted)
        else {
            return Error::e_explain(ErrorType::InternalError, "paid call without a payment");
        };
        let pool = Arc::clone(&a.route.upstream);
        let held = match paid::read_body(session, self.sizes.max_body_bytes).await {
            Err(code) => {
                Payments::release(&self.store, &paid).await;
                session.set_keepalive(None);
                let r = Refusal::new(code, outcome::failure_message(code));
                return self.answer_paid(session, ctx, r).await;
            }
            Ok(body) => {
                let mut up = session.req_header().clone();
                self.prepare_upstream_request(session, &mut up, ctx)?;
                ctx.decided = Some(Instant::now());
                paid::forward(
                    &self.connector,
                    &pool,
                    &mut ctx.tried,
                    &up,
                    &body,
                    self.sizes.max_body_bytes,
                )
                .await
            }
        };
        let held = match held {
            Ok(h) => h,
            Err(not_held) => {
                Payments::release(&self.store, &paid).await;
                let r = match not_held {
                    NotHeld::Upstream(code) => Refusal::new(code, outcome::failure_message(code)),
                    NotHeld::TooLarge => Refusal::new(
                        ErrorCode::UpstreamUnavailable,
                        "the upstream's answer is larger than this gateway holds for a paid \
                         call; the payment was not settled",
                    ),
                };
                return self.answer_paid(session, ctx, r).await;
            }
        };
        let status = held.header.status.as_u16();
        ctx.upstream_status = Some(status);
        if status >= 400 {
            // Not served: not paid. The payment may be sent again.
            Payments::release(&self.store, &paid).await;
            return self.release_held(session, ctx, &held, None).await;
        }
        let settlement = paid::settle(payments.facilitator(), &paid, payments.settle_window).await;
        let (state, transaction, reason) = match &settlement {
            Settlement::Settled(r) => (PaymentState::Settled, Some(r.transaction.clone()), None),
            Settlement::Failed(why) => (PaymentState::Failed, None, Some(why.clone())),
            Settlement::Unknown(why) => (PaymentState::SettlementUnknown, None, Some(why.clone())),
        };
        self.metrics
            .x402_payments
            .with_label_values(&[state.as_str()])
            .inc();
        let id = &paid.accepted.identity;
        ctx.payment = Some(Payment {
            payer: id.payer.clone(),
            amount_micros: paid.offer.price_micros(),
            amount_units: paid.accepted.units.to_string(),
            asset: paid.offer.terms().asset.clone(),
            network: id.network.clone(),
            nonce: id.nonce.clone(),
            valid_before: i64::try_from(paid.accepted.valid_before).unwrap_or(i64::MAX),
            transaction,
            state,
            reason,
        });
        match settlement {
            Settlement::Settled(response) => {
                let name = if paid.version == 1 {
                    paygate_x402::header::X_PAYMENT_RESPONSE
                } else {
                    paygate_x402::header::PAYMENT_RESPONSE
                };
                let value = paygate_x402::header::encode(&response);
                self.release_held(session, ctx, &held, Some((name, value)))
                    .await
            }
            Settlement::Failed(why) => {
                // No money moved: the same authorization may be tried again.
                Payments::release(&self.store, &paid).await;
                let r = Payments::offer_on(
                    Refusal::new(
                        ErrorCode::PaymentFailed,
                        format!("the payment could not be settled: {why}"),
                    )
                    .with_reason(why),
                    Some(&paid.offer),
                );
                self.answer_paid(session, ctx, r).await
            }
            Settlement::Unknown(why) => {
                // The claim stays: the money may have moved.
                let r = Refusal::new(
                    ErrorCode::FacilitatorTimeout,
                    format!(
                        "the payment's settlement is unknown ({why}); it is recorded for \
                         reconciliation and this payment will not be accepted again"
                    ),
                )
                .with_reason("settlement_unknown");
                self.answer_paid(session, ctx, r).await
            }
        }
    }

    /// A paid call's own answer (the upstream's is not sent).
    async fn answer_paid(
        &self,
        session: &mut Session,
        ctx: &mut CallCtx,
        r: Refusal,
    ) -> Result<()> {
        let body = r.body(&ctx.request_id);
        respond::json(session, ctx, r.code.status(), body, &r.headers()).await
    }

    /// Sends a held upstream answer, with `extra` (the settlement's header).
    async fn release_held(
        &self,
        session: &mut Session,
        ctx: &CallCtx,
        held: &Held,
        extra: Option<(&'static str, String)>,
    ) -> Result<()> {
        let head = session.req_header().method == http::Method::HEAD;
        let mut resp = paid::release_header(held, head);
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some((name, value)) = extra {
            resp.insert_header(name, value)?;
        }
        ctx.where_you_stand(&mut resp);
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(held.body.clone()), true)
            .await
    }
}
