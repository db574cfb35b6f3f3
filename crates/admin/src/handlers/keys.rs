//! `/admin/v1/customers/{id}/keys` and `/admin/v1/keys/{key_id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use paygate_billing::records::KeyRow;
use paygate_billing::DbError;
use paygate_core::apikey;
use paygate_store::RecordChange;

use crate::extract::{Audited, Paging};
use crate::handlers::customers;
use crate::handlers::idempotency::{IdempotencyKey, ShownOnce};
use crate::views::{KeyList, NewKey};
use crate::{AdminState, ApiError};

/// Create a key
///
/// The answer is the only place the full key ever appears: a replay (same
/// `Idempotency-Key`) answers `"key": null`.
#[utoipa::path(
    post,
    path = "/admin/v1/customers/{id}/keys",
    operation_id = "create_key",
    tag = "keys",
    params(("id" = String, Path, description = "The customer's id"), IdempotencyKey, Audited),
    responses((status = 201, description = "The new key", body = NewKey), ApiError)
)]
pub async fn create(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Audited(actor): Audited,
) -> Result<(StatusCode, Extension<ShownOnce>, Json<NewKey>), ApiError> {
    let customer = customers::load(&s, &id).await?;
    let new = apikey::generate();
    let hash = s.catalog.hash_key(&new.secret);
    let rec =
        s.db.create_key(&customer.id, &new.prefix, &hash, &actor)
            .await?;
    s.catalog.put_key(rec.clone());
    s.changes
        .publish(RecordChange::Key(rec.id.to_string()))
        .await;
    tracing::info!(customer = %customer.id, prefix = %rec.prefix, "api key created");
    Ok((
        StatusCode::CREATED,
        Extension(ShownOnce("key")),
        Json(NewKey {
            id: rec.id,
            key: new.secret,
            prefix: rec.prefix,
            customer_id: rec.customer_id,
            created_at: rec.created_at,
        }),
    ))
}

/// List a customer's keys
///
/// Never the secrets. In id order (oldest first).
#[utoipa::path(
    get,
    path = "/admin/v1/customers/{id}/keys",
    operation_id = "list_keys",
    tag = "keys",
    params(("id" = String, Path, description = "The customer's id"), Paging),
    responses((status = 200, description = "One page of keys", body = KeyList), ApiError)
)]
pub async fn list(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    page: Paging,
) -> Result<Json<KeyList>, ApiError> {
    customers::load(&s, &id).await?;
    let p =
        s.db.list_keys(&id, page.limit, page.starting_after.as_deref())
            .await?;
    Ok(Json(KeyList::from(p)))
}

/// Revoke a key
///
/// The gateway refuses it from the next call on.
#[utoipa::path(
    delete,
    path = "/admin/v1/keys/{key_id}",
    operation_id = "revoke_key",
    tag = "keys",
    params(("key_id" = String, Path, description = "The key's id"), Audited),
    responses((status = 200, description = "The key, now revoked", body = KeyRow), ApiError)
)]
pub async fn revoke(
    State(s): State<Arc<AdminState>>,
    Path(key_id): Path<String>,
    Audited(actor): Audited,
) -> Result<Json<KeyRow>, ApiError> {
    let row = match s.db.revoke_key(&key_id, &actor).await {
        Err(DbError::NotFound) => return Err(ApiError::not_found("key", &key_id)),
        other => other?,
    };
    s.catalog.revoke_key(&key_id, &row.prefix);
    s.changes.publish(RecordChange::Key(key_id.clone())).await;
    tracing::info!(prefix = %row.prefix, "api key revoked");
    Ok(Json(row))
}
