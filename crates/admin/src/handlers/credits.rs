//! Prepaid credits and the balance view.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use paygate_billing::records::Grant;
use paygate_core::balance::Balance;
use paygate_core::metering::limits_for;
use paygate_core::Micros;
use paygate_store::{CustomerRecord, SeedMode, StoreError};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::extract::{Audited, JsonBody};
use crate::handlers::customers;
use crate::handlers::idempotency::IdempotencyKey;
use crate::views::{CreditResult, ErrorBody};
use crate::{AdminState, ApiError};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    #[schema(value_type = i64, minimum = 1)]
    amount_micros: Micros,
    /// Your payment's reference: each is credited once.
    #[schema(min_length = 1, max_length = 200)]
    reference: String,
}

/// Add prepaid credits, once per reference
///
/// A replay of a reference answers 200 with the balance and changes nothing.
#[utoipa::path(
    post,
    path = "/admin/v1/customers/{id}/credits",
    operation_id = "add_credits",
    tag = "credits",
    params(("id" = String, Path, description = "The customer's id"), IdempotencyKey, Audited),
    request_body = TopUp,
    responses(
        (status = 201, description = "Credited", body = CreditResult),
        (status = 200, description = "This reference was already credited: nothing changed", body = CreditResult),
        ApiError,
        (status = 503, description = "The store is unavailable: retry (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn top_up(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Audited(actor): Audited,
    JsonBody(b): JsonBody<TopUp>,
) -> Result<(StatusCode, Json<CreditResult>), ApiError> {
    if b.amount_micros <= 0 {
        return Err(ApiError::Invalid(
            "amount_micros: must be a positive integer".into(),
        ));
    }
    if b.reference.trim().is_empty() || b.reference.len() > 200 {
        return Err(ApiError::Invalid(
            "reference: must be 1 to 200 characters".into(),
        ));
    }
    let customer = customers::load(&s, &id).await?;
    // Refuse before recording a grant the balance could not hold (it would
    // overflow the store's counter).
    if live_balance(&s, &customer)
        .await?
        .checked_add(b.amount_micros)
        .is_none()
    {
        return Err(ApiError::Invalid(
            "amount_micros: the balance would exceed the largest amount".into(),
        ));
    }
    let (status, balance) = match s
        .db
        .grant_credits(&id, b.amount_micros, &b.reference, &actor)
        .await?
    {
        Grant::Credited => (
            StatusCode::CREATED,
            s.store.add_credits(&id, b.amount_micros).await?,
        ),
        // A replay credits nothing; adding zero reads the live balance.
        Grant::AlreadyCredited => (StatusCode::OK, s.store.add_credits(&id, 0).await?),
    };
    Ok((
        status,
        Json(CreditResult {
            customer_id: id,
            amount_micros: b.amount_micros,
            reference: b.reference,
            credited: status == StatusCode::CREATED,
            credits_micros: balance,
        }),
    ))
}

/// The store's balance; a store that lost (or never had) this customer is
/// first loaded from the ledger, so the next `add_credits` lands on real counters.
async fn live_balance(s: &AdminState, customer: &CustomerRecord) -> Result<Micros, ApiError> {
    let id = customer.id.as_str();
    match s.store.add_credits(id, 0).await {
        Err(StoreError::NotSeeded) => {
            let counters = s.db.counters(customer, Utc::now()).await?;
            s.store.seed(id, counters, SeedMode::IfAbsent).await?;
            Ok(s.store.add_credits(id, 0).await?)
        }
        other => Ok(other?),
    }
}

/// Credits, quota and rate limit now
///
/// As the gateway counts them; the same body as the gateway's
/// `GET /paygate/v1/me`.
#[utoipa::path(
    get,
    path = "/admin/v1/customers/{id}/balance",
    operation_id = "get_balance",
    tag = "credits",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "Where the customer stands now", body = Balance),
        ApiError,
        (status = 503, description = "The store is unavailable: retry (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn balance(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Balance>, ApiError> {
    let customer = customers::load(&s, &id).await?;
    let plan = s.catalog.plan(customer.plan_id.as_str()).ok_or_else(|| {
        ApiError::Internal(format!(
            "plan {} of customer {id} is not loaded",
            customer.plan_id
        ))
    })?;
    let (limits, period) = limits_for(&plan, 1, &customer, Utc::now());
    let snap = match s.store.peek(&id, &limits).await {
        Err(StoreError::NotSeeded) => {
            live_balance(&s, &customer).await?;
            s.store.peek(&id, &limits).await?
        }
        other => other?,
    };
    // Live state only the store has; a store that cannot say shows none.
    let websockets = s
        .store
        .websockets_open(customer.id.as_str())
        .await
        .unwrap_or(0);
    Ok(Json(
        Balance::new(&customer, &plan, &snap, &period).with_websockets_open(websockets),
    ))
}
