//! x402 before the call is forwarded: the 402 offer, and the steps a
//! payment passes, in this order: decoded (400 `invalid_payment`), matched
//! against the route's offer without asking anyone (402 `payment_invalid`),
//! its identity claimed once across gateways (402 `payment_invalid`,
//! reason `replayed`), verified by the facilitator (402 `payment_invalid`
//! with its reason; 504 `facilitator_timeout`). A claim is given back when
//! the payment was not used, so the client may send it again.

use std::time::Duration;

use paygate_config::X402Config;
use paygate_core::ErrorCode;
use paygate_store::PaymentClaim;
use paygate_x402::facilitator::{Facilitator, Request};
use paygate_x402::header::{self, Sent};
use paygate_x402::offer::{Accepted, Offer, Terms};
use pingora::http::RequestHeader;
use serde_json::Value;

use crate::refusal::{OfferAnswer, Refusal};
use crate::routing::{Route, RoutePrice};
use crate::store::StoreHandle;

/// A claim outlives the authorization by this much (clock skew between
/// us and the chain).
const CLAIM_MARGIN_SECS: u64 = 60;
/// And lives at most this long, whatever `validBefore` says: after that
/// the chain itself refuses a used nonce.
const CLAIM_MAX_SECS: u64 = 30 * 24 * 3600;

/// The `[x402]` settings at work: the terms every offer is made on and
/// the facilitator that checks and settles payments.
pub struct Payments {
    terms: Terms,
    facilitator: Facilitator,
    /// Settlement is retried for this long (`max_timeout_seconds`).
    pub settle_window: Duration,
}

/// A payment that passed every check: what the rest of the call needs to
/// settle it and to record it.
#[derive(Debug, Clone)]
pub struct PaidCall {
    pub offer: Offer,
    /// The protocol version the client spoke (1: `X-PAYMENT`, 2: `PAYMENT-SIGNATURE`).
    pub version: u8,
    /// The payment document exactly as the client sent it.
    pub document: Value,
    /// The requirements it was checked against, in the client's version.
    pub requirements: Value,
    pub accepted: Accepted,
    /// The store key of its claim.
    pub claim: String,
}

impl PaidCall {
    pub fn facilitator_request(&self) -> Request<'_> {
        Request {
            x402_version: self.version,
            payment_payload: &self.document,
            payment_requirements: &self.requirements,
        }
    }

    /// The network's name in the client's version of the protocol.
    pub fn network_name(&self) -> &str {
        let t = self.offer.terms();
        if self.version == 1 {
            &t.network
        } else {
            &t.network_id
        }
    }
}

/// The payment headers a call carries: 400 `invalid_payment` when one
/// cannot be read.
pub fn sent(req: &RequestHeader) -> Result<Option<Sent>, Refusal> {
    let get = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    Sent::from_headers(get(header::X_PAYMENT), get(header::PAYMENT_SIGNATURE))
        .map_err(|e| Refusal::new(ErrorCode::InvalidPayment, e.to_string()))
}

/// The URL a payment is for: the call's own, as the client addressed it.
fn resource_url(req: &RequestHeader) -> String {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let host = req
        .uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    format!("http://{host}{path}")
}

impl Payments {
    pub fn new(x: &X402Config) -> Self {
        Self {
            terms: Terms {
                pay_to: x.pay_to.clone(),
                network: x.network.clone(),
                network_id: x.network_id.clone(),
                asset: x.asset.clone(),
                asset_decimals: x.asset_decimals,
                asset_name: x.asset_name.clone(),
                asset_version: x.asset_version.clone(),
                max_timeout_seconds: x.max_timeout_seconds,
            },
            facilitator: Facilitator::new(
                &x.facilitator_url,
                Duration::from_millis(x.facilitator_timeout_ms),
            ),
            settle_window: Duration::from_secs(x.max_timeout_seconds),
        }
    }

    pub fn facilitator(&self) -> &Facilitator {
        &self.facilitator
    }

    /// The route's offer for this call. `None` only for a price the
    /// configuration check would have refused.
    pub fn offer(&self, route: &Route, price: &RoutePrice, req: &RequestHeader) -> Option<Offer> {
        let description = format!("one call to {} (route {})", route.prefix, route.id);
        Offer::new(
            self.terms.clone(),
            price.price_micros,
            resource_url(req),
            description,
        )
        .ok()
    }

    /// 402 `payment_required` to a caller without credentials: the v1
    /// offer as the body, the v2 offer in `PAYMENT-REQUIRED`.
    pub fn payment_required(offer: &Offer, request_id: &str) -> Refusal {
        const MESSAGE: &str = "this route is paid per call: send an X-PAYMENT (x402 v1) or \
                               PAYMENT-SIGNATURE (x402 v2) header, or credentials";
        let body = offer.body_v1(MESSAGE, ErrorCode::PaymentRequired.as_str(), request_id);
        let mut r = Refusal::new(ErrorCode::PaymentRequired, MESSAGE);
        r.offer = Some(Box::new(OfferAnswer {
            header: header::encode(&offer.required_v2(MESSAGE)),
            body: serde_json::to_string(&body).ok(),
        }));
        r
    }

    /// A 402 that may be paid instead: `PAYMENT-REQUIRED` beside the usual
    /// body. Other refusals pass unchanged.
    pub fn offer_on(refusal: Refusal, offer: Option<&Offer>) -> Refusal {
        let Some(offer) = offer else {
            return refusal;
        };
        if refusal.code.status() != 402 {
            return refusal;
        }
        let mut r = refusal;
        r.offer = Some(Box::new(OfferAnswer {
            header: header::encode(&offer.required_v2(&r.message)),
            body: None,
        }));
        r
    }

    /// The local check: does the payment pay this offer, now?
    pub fn check(offer: Offer, sent: Sent, now: u64) -> Result<PaidCall, Refusal> {
        let accepted = offer.check(&sent.payment, now).map_err(|m| {
            Self::offer_on(
                Refusal::new(ErrorCode::PaymentInvalid, m.to_string()).with_reason(m.reason()),
                Some(&offer),
            )
        })?;
        let version = sent.payment.version();
        let requirements = if version == 1 {
            serde_json::to_value(offer.requirements_v1())
        } else {
            serde_json::to_value(offer.requirements_v2())
        }
        .unwrap_or(Value::Null);
        let id = &accepted.identity;
        Ok(PaidCall {
            claim: format!("{}:{}:{}", id.network, id.payer, id.nonce),
            offer,
            version,
            document: sent.document,
            requirements,
            accepted,
        })
    }

    /// Claims the payment's identity in the store, so no other call (on
    /// any gateway) is served for it. A store that cannot answer refuses
    /// the payment whatever `on_unavailable` says: a payment served twice
    /// cannot be given back.
    pub async fn claim(store: &StoreHandle, paid: &PaidCall, now: u64) -> Result<(), Refusal> {
        let ttl_secs = paid
            .accepted
            .valid_before
            .saturating_sub(now)
            .saturating_add(CLAIM_MARGIN_SECS)
            .min(CLAIM_MAX_SECS);
        match store.claim_payment(&paid.claim, ttl_secs * 1000).await {
            Ok(PaymentClaim::Claimed) => Ok(()),
            Ok(PaymentClaim::AlreadyClaimed) => Err(Self::offer_on(
                Refusal::new(
                    ErrorCode::PaymentInvalid,
                    "this payment was already used for another call",
                )
                .with_reason("replayed"),
                Some(&paid.offer),
            )),
            Err(e) => Err(Refusal::store_unavailable(e)),
        }
    }

    /// Gives the claim back: the payment was not used.
    pub async fn release(store: &StoreHandle, paid: &PaidCall) {
        // A failure is counted; the claim then expires on its own.
        let _ = store.release_payment(&paid.claim).await;
    }

    /// Asks the facilitator whether the payment is good (signature, funds).
    /// The claim is given back when it is not, or when no answer came.
    pub async fn verify(&self, store: &StoreHandle, paid: &PaidCall) -> Result<(), Refusal> {
        match self.facilitator.verify(&paid.facilitator_request()).await {
            Ok(v) if v.is_valid => Ok(()),
            Ok(v) => {
                Self::release(store, paid).await;
                let reason = v.invalid_reason.unwrap_or_else(|| "invalid_payment".into());
                Err(Self::offer_on(
                    Refusal::new(
                        ErrorCode::PaymentInvalid,
                        format!("the facilitator refused the payment: {reason}"),
                    )
                    .with_reason(reason),
                    Some(&paid.offer),
                ))
            }
            Err(e) => {
                Self::release(store, paid).await;
                Err(Refusal::new(
                    ErrorCode::FacilitatorTimeout,
                    format!("the payment could not be verified: {e}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_is_the_call_as_addressed() {
        let mut req = RequestHeader::build("GET", b"/v1/signals/BTC?x=1", None).unwrap();
        req.insert_header("host", "api.example.com").unwrap();
        assert_eq!(
            resource_url(&req),
            "http://api.example.com/v1/signals/BTC?x=1"
        );
    }

    #[test]
    fn only_402s_carry_an_offer() {
        let terms = Terms {
            pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
            network: "base-sepolia".into(),
            network_id: "eip155:84532".into(),
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            asset_decimals: 6,
            asset_name: "USDC".into(),
            asset_version: "2".into(),
            max_timeout_seconds: 60,
        };
        let offer = Offer::new(terms, 17_000, "http://h/p", "d").unwrap();
        let quota = Refusal::new(ErrorCode::QuotaExhausted, "used up");
        let r = Payments::offer_on(quota, Some(&offer));
        assert!(r.offer.as_ref().is_some_and(|o| o.body.is_none()));
        let limited = Refusal::new(ErrorCode::RateLimited, "slow down");
        assert!(Payments::offer_on(limited, Some(&offer)).offer.is_none());
        let offered = Payments::payment_required(&offer, "rid");
        let body: Value = serde_json::from_str(&offered.body("rid")).unwrap();
        assert_eq!(body["x402Version"], 1);
        assert_eq!(body["accepts"][0]["maxAmountRequired"], "17000");
        assert_eq!(body["code"], "payment_required");
        assert_eq!(body["request_id"], "rid");
    }
}
