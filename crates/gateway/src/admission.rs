//! From the store's answer to a call's [`Limits`] (or its failure) to a verdict.

use paygate_config::OnUnavailable;
use paygate_core::ErrorCode;
use paygate_store::{Decision, Limits, Reservation, Snapshot, Store};

use crate::refusal::Refusal;
use crate::store::StoreHandle;

/// Where an admitted call's reservation lives, so it is given back to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedIn {
    Store,
    /// The per-node fallback limiter (`on_unavailable = "local"`).
    Fallback,
    /// Nothing reserved (`on_unavailable = "allow"`).
    Nowhere,
}

/// An admitted call: what it reserved, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    pub reservation: Reservation,
    pub reserved_in: ReservedIn,
}

/// The rate limit, quota and credits step: one store call, all or nothing.
/// When the store fails, `on_unavailable` decides. The counters the store
/// answered go to `snapshot`, for the caller's headers on a refusal too.
pub async fn admit(
    store: &StoreHandle,
    fallback: &dyn Store,
    on_unavailable: OnUnavailable,
    customer: &str,
    limits: &Limits,
    snapshot: &mut Option<Snapshot>,
) -> Result<Admit, Refusal> {
    let decided =
        tracing::Instrument::instrument(store.admit(customer, limits), crate::trace::store());
    let (answer, reserved_in) = match decided.await {
        Ok(a) => (a, ReservedIn::Store),
        Err(e) => match on_unavailable {
            OnUnavailable::Deny => return Err(Refusal::store_unavailable(e)),
            OnUnavailable::Allow => {
                return Ok(Admit {
                    reservation: Reservation::default(),
                    reserved_in: ReservedIn::Nowhere,
                })
            }
            OnUnavailable::Local => match fallback.admit(customer, limits).await {
                Ok(a) => (a, ReservedIn::Fallback),
                Err(e) => return Err(Refusal::store_unavailable(e)),
            },
        },
    };
    *snapshot = Some(answer.snapshot);
    decide(answer.decision).map(|reservation| Admit {
        reservation,
        reserved_in,
    })
}

/// The store's decision as the caller hears it.
pub fn decide(decision: Decision) -> Result<Reservation, Refusal> {
    match decision {
        Decision::Admitted(reservation) => Ok(reservation),
        Decision::RateLimited { retry_after_ms } => Err(Refusal::new(
            ErrorCode::RateLimited,
            "rate limit exceeded; retry later",
        )
        .retry_after_ms(retry_after_ms)),
        Decision::QuotaExhausted => Err(Refusal::new(
            ErrorCode::QuotaExhausted,
            "the monthly quota of this plan is used up",
        )),
        Decision::InsufficientCredits => Err(Refusal::new(
            ErrorCode::InsufficientCredits,
            "the prepaid credit balance is below the price of this call",
        )),
    }
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
        async fn open_websocket(
            &self,
            _: &str,
            _: &str,
            _: u32,
            _: u64,
        ) -> Result<WebsocketSlot, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn renew_websocket(&self, _: &str, _: &str, _: u64) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }
        async fn close_websocket(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }
        async fn websockets_open(&self, _: &str) -> Result<u32, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn claim_payment(
            &self,
            _: &str,
            _: u64,
        ) -> Result<paygate_store::PaymentClaim, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn release_payment(&self, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }
        async fn epoch(&self) -> Result<Option<String>, StoreError> {
            Err(StoreError::Timeout)
        }
        async fn mark_epoch(&self, _: &str) -> Result<(), StoreError> {
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

    async fn verdict(
        store: &StoreHandle,
        fallback: &MemoryStore,
        on_unavailable: OnUnavailable,
    ) -> Result<ReservedIn, ErrorCode> {
        let mut snapshot = None;
        admit(
            store,
            fallback,
            on_unavailable,
            "c",
            &limits(),
            &mut snapshot,
        )
        .await
        .map(|a| a.reserved_in)
        .map_err(|r| r.code)
    }

    #[tokio::test]
    async fn store_down_follows_on_unavailable() {
        let errors = prometheus::IntCounter::new("e", "e").unwrap();
        let down = StoreHandle::new(std::sync::Arc::new(DownStore), errors.clone());
        let fallback = MemoryStore::new();
        let mut snapshot = None;
        let refusal = admit(
            &down,
            &fallback,
            OnUnavailable::Deny,
            "c",
            &limits(),
            &mut snapshot,
        )
        .await
        .unwrap_err();
        assert_eq!(refusal.code, ErrorCode::LimiterUnavailable);
        assert_eq!(refusal.code.status(), 503);
        assert_eq!(refusal.retry_after_secs, Some(1));
        assert_eq!(
            verdict(&down, &fallback, OnUnavailable::Allow).await,
            Ok(ReservedIn::Nowhere)
        );
        // `local`: the per-node limiter still enforces the plan's burst.
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            verdicts.push(verdict(&down, &fallback, OnUnavailable::Local).await);
        }
        assert_eq!(
            verdicts,
            [
                Ok(ReservedIn::Fallback),
                Ok(ReservedIn::Fallback),
                Err(ErrorCode::RateLimited)
            ]
        );
        // Every failed store call is counted once, whatever followed.
        assert_eq!(errors.get(), 5);
    }

    #[test]
    fn decisions_become_refusals_with_retry_after() {
        assert!(decide(Decision::Admitted(Reservation::default())).is_ok());
        let r = decide(Decision::RateLimited {
            retry_after_ms: 1_500,
        })
        .unwrap_err();
        assert_eq!(
            (r.code, r.retry_after_secs),
            (ErrorCode::RateLimited, Some(2))
        );
        let r = decide(Decision::RateLimited { retry_after_ms: 1 }).unwrap_err();
        assert_eq!(r.retry_after_secs, Some(1), "never Retry-After: 0");
        assert_eq!(
            decide(Decision::QuotaExhausted).unwrap_err().code.status(),
            402
        );
        assert_eq!(
            decide(Decision::InsufficientCredits).unwrap_err().code,
            ErrorCode::InsufficientCredits
        );
    }
}
