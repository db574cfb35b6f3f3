//! From a plan and a route to the store's [`Limits`], and from the store's
//! answer (or failure) to a verdict.

use chrono::{DateTime, Utc};
use paygate_config::OnUnavailable;
use paygate_core::period::Period;
use paygate_core::{ErrorCode, Overage, Plan};
use paygate_store::{CustomerRecord, Decision, Limits, QuotaLimit, Reservation, Snapshot, Store};

use crate::refusal::Refusal;

/// What one call asks of the store, and the billing period it falls in.
pub fn limits_for(
    plan: &Plan,
    cost: u32,
    customer: &CustomerRecord,
    now: DateTime<Utc>,
) -> (Limits, Period) {
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
                    refusal: Refusal::store_unavailable(e),
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
                Err(e) => {
                    return Verdict::Refuse {
                        refusal: Refusal::store_unavailable(e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use paygate_core::Micros;
    use paygate_store::{Admission, Counters, MemoryStore, SeedMode, StoreError, WebsocketSlot};

    /// A store that is always down, standing in for an unreachable Redis.
    struct DownStore;

    #[async_trait]
    impl Store for DownStore {
        async fn admit(&self, _: &str, _: &Limits) -> Result<Admission, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn give_back(&self, _: &str, _: &Reservation) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }
        async fn peek(&self, _: &str, _: &Limits) -> Result<Snapshot, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn add_credits(&self, _: &str, _: Micros) -> Result<Micros, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn seed(&self, _: &str, _: Counters, _: SeedMode) -> Result<bool, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn open_websocket(&self, _: &str, _: u32) -> Result<WebsocketSlot, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn close_websocket(&self, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }
    }

    fn limits() -> Limits {
        Limits {
            emission_interval_ns: 1_000_000_000,
            capacity: 2,
            units: 1,
            quota: None,
            credit_price_micros: None,
        }
    }

    #[tokio::test]
    async fn store_down_follows_on_unavailable() {
        let fallback = MemoryStore::new();
        let l = limits();
        match admit(&DownStore, &fallback, OnUnavailable::Deny, "c", &l).await {
            Verdict::Refuse { refusal, .. } => {
                assert_eq!(refusal.code, ErrorCode::LimiterUnavailable);
                assert_eq!(refusal.code.status(), 503);
                assert_eq!(refusal.retry_after_secs, Some(1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            admit(&DownStore, &fallback, OnUnavailable::Allow, "c", &l).await,
            Verdict::Admit {
                reserved_in: ReservedIn::Nowhere,
                ..
            }
        ));
        // `local`: the per-node limiter still enforces the plan's burst.
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            verdicts.push(admit(&DownStore, &fallback, OnUnavailable::Local, "c", &l).await);
        }
        assert!(matches!(
            verdicts[0],
            Verdict::Admit {
                reserved_in: ReservedIn::Fallback,
                ..
            }
        ));
        assert!(matches!(verdicts[1], Verdict::Admit { .. }));
        assert!(
            matches!(&verdicts[2], Verdict::Refuse { refusal, .. } if refusal.code == ErrorCode::RateLimited)
        );
    }
}
