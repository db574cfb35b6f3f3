//! `/admin/v1/customers/{id}/keys` and `/admin/v1/keys/{key_id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use paygate_billing::DbError;
use paygate_core::apikey;
use paygate_store::RecordChange;
use serde_json::{json, Value};

use crate::extract::{Audited, Paging};
use crate::handlers::customers;
use crate::handlers::idempotency::ShownOnce;
use crate::{AdminState, ApiError};

/// Mints a key; the response is the only place the full key ever appears.
pub async fn create(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Audited(actor): Audited,
) -> Result<(StatusCode, Extension<ShownOnce>, Json<Value>), ApiError> {
    let customer = customers::load(&s, &id).await?;
    let new = apikey::generate();
    let hash = apikey::hash(s.catalog.key_secret(), &new.secret);
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
        Json(json!({
            "id": rec.id,
            "key": new.secret,
            "prefix": rec.prefix,
            "customer_id": rec.customer_id,
            "created_at": rec.created_at,
        })),
    ))
}

pub async fn list(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    page: Paging,
) -> Result<Json<Value>, ApiError> {
    customers::load(&s, &id).await?;
    let p =
        s.db.list_keys(&id, page.limit, page.starting_after.as_deref())
            .await?;
    Ok(Json(json!({"data": p.data, "has_more": p.has_more})))
}

/// Revokes a key: refused by the gateway from the next call on.
pub async fn revoke(
    State(s): State<Arc<AdminState>>,
    Path(key_id): Path<String>,
    Audited(actor): Audited,
) -> Result<Json<Value>, ApiError> {
    let row = match s.db.revoke_key(&key_id, &actor).await {
        Err(DbError::NotFound) => return Err(ApiError::not_found("key", &key_id)),
        other => other?,
    };
    s.catalog.revoke_key(&key_id);
    s.changes.publish(RecordChange::Key(key_id.clone())).await;
    tracing::info!(prefix = %row.prefix, "api key revoked");
    Ok(Json(json!(row)))
}
