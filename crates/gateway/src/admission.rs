//! From a plan and a route to the store's [`Limits`], and from the store's
//! answer (or failure) to a verdict.

use chrono::{DateTime, Utc};
use paygate_config::OnUnavailable;
use paygate_core::period::Period;
use paygate_core::{ErrorCode, Overage, Plan};
use paygate_store::{CustomerRecord, Decision, Limits, QuotaLimit, Reservation, Snapshot, Store};

use crate::refusal::Refusal;

/// What one call asks of the store, and the billing period it falls in.
pub fn limits_for(plan: &Plan, cost: u32, customer: &CustomerRecord, now: DateTime<Utc>) -> (Limits, Period) {
    let period = Period::containing(customer.anchor_day, now);
    let units = u64::from(cost);
    let limits = Limits {
        emission_interval_ns: plan.rate_limit.emission_interval_ns(),
        capacity: plan.rate_limit.capacity(),
        units,
        quota: plan.quota.map(|q| QuotaLimit {
            limit: q.calls,
            period_start: period.start.timestamp(),
            overage_price_micros: match plan.overage {
                Overage::Block => None,
                Overage::Price { price_micros } => Some(price_micros),
            },
        }),
        credit_price_micros: plan
            .price_per_call_micros
            .map(|p| p.saturating_mul(i64::from(cost))),
    };
    (limits, period)
}

/// Where an admitted call's reservation lives, so it is given back to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedIn {
    Store,
    /// The per-node fallback limiter (`on_unavailable = "local"`).
    Fallback,
    /// Nothing reserved (`on_unavailable = "allow"`).
    Nowhere,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Admit {
        reservation: Reservation,
        reserved_in: ReservedIn,
        snapshot: Option<Snapshot>,
    },
    Refuse {
        refusal: Refusal,
        snapshot: Option<Snapshot>,
    },
}

/// Asks the store; when it fails, `on_unavailable` decides.
pub async fn admit(
    store: &dyn Store,
    fallback: &dyn Store,
    on_unavailable: OnUnavailable,
    customer: &str,
    limits: &Limits,
) -> Verdict {
    let (answer, reserved_in) = match store.admit(customer, limits).await {
        Ok(a) => (a, ReservedIn::Store),
        Err(e) => match on_unavailable {
            OnUnavailable::Deny => {
                return Verdict::Refuse {
                    refusal: Refusal::new(
                        ErrorCode::LimiterUnavailable,
                        format!("the limiter is unavailable: {e}"),
                    )
                    .retry_after_ms(1000),
                    snapshot: None,
                }
            }
            OnUnavailable::Allow => {
                return Verdict::Admit {
                    reservation: Reservation::default(),
                    reserved_in: ReservedIn::Nowhere,
                    snapshot: None,
                }
            }
            OnUnavailable::Local => match fallback.admit(customer, limits).await {
                Ok(a) => (a, ReservedIn::Fallback),
                Err(_) => {
                    return Verdict::Refuse {
                        refusal: Refusal::new(ErrorCode::LimiterUnavailable, "the limiter is unavailable")
                            .retry_after_ms(1000),
                        snapshot: None,
                    }
                }
            },
        },
    };
    let snapshot = Some(answer.snapshot);
    let refusal = match answer.decision {
        Decision::Admitted(reservation) => {
            return Verdict::Admit {
                reservation,
                reserved_in,
                snapshot,
            }
        }
        Decision::RateLimited { retry_after_ms } => {
            Refusal::new(ErrorCode::RateLimited, "rate limit exceeded; retry later")
                .retry_after_ms(retry_after_ms)
        }
        Decision::QuotaExhausted => Refusal::new(
            ErrorCode::QuotaExhausted,
            "the monthly quota of this plan is used up",
        ),
        Decision::InsufficientCredits => Refusal::new(
            ErrorCode::InsufficientCredits,
            "the prepaid credit balance is below the price of this call",
        ),
    };
    Verdict::Refuse { refusal, snapshot }
}
