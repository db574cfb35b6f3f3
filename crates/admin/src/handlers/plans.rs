//! `/admin/v1/plans`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use paygate_billing::DbError;
use paygate_core::Plan;
use paygate_store::RecordChange;
use serde_json::Value;

use crate::extract::{parse_json, Audited, JsonBody, Paging};
use crate::handlers::idempotency::IdempotencyKey;
use crate::views::{Deleted, PlanList};
use crate::{AdminState, ApiError};

fn plan_from(mut v: Value, path_id: Option<&str>) -> Result<Plan, ApiError> {
    if let (Some(id), Some(obj)) = (path_id, v.as_object_mut()) {
        match obj.get("id") {
            None => {
                obj.insert("id".into(), Value::String(id.to_string()));
            }
            Some(Value::String(body_id)) if body_id == id => {}
            Some(_) => {
                return Err(ApiError::Invalid(
                    "id: must match the id in the path".into(),
                ))
            }
        }
    }
    let plan: Plan = parse_json(v.to_string().as_bytes())?;
    plan.validate()?;
    Ok(plan)
}

/// List plans
///
/// In id order.
#[utoipa::path(
    get,
    path = "/admin/v1/plans",
    operation_id = "list_plans",
    tag = "plans",
    params(Paging),
    responses((status = 200, description = "One page of plans", body = PlanList), ApiError)
)]
pub async fn list(
    State(s): State<Arc<AdminState>>,
    page: Paging,
) -> Result<Json<PlanList>, ApiError> {
    let p =
        s.db.list_plans(page.limit, page.starting_after.as_deref())
            .await?;
    Ok(Json(PlanList::from(p)))
}

/// Create a plan
#[utoipa::path(
    post,
    path = "/admin/v1/plans",
    operation_id = "create_plan",
    tag = "plans",
    params(IdempotencyKey, Audited),
    request_body = Plan,
    responses((status = 201, description = "The plan as stored", body = Plan), ApiError)
)]
pub async fn create(
    State(s): State<Arc<AdminState>>,
    Audited(actor): Audited,
    JsonBody(v): JsonBody<Value>,
) -> Result<(StatusCode, Json<Plan>), ApiError> {
    let plan = plan_from(v, None)?;
    s.db.create_plan(&plan, &actor).await?;
    s.catalog.put_plan(plan.clone());
    s.changes
        .publish(RecordChange::Plan(plan.id.to_string()))
        .await;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// Get a plan
#[utoipa::path(
    get,
    path = "/admin/v1/plans/{id}",
    operation_id = "get_plan",
    tag = "plans",
    params(("id" = String, Path, description = "The plan's id")),
    responses((status = 200, description = "The plan", body = Plan), ApiError)
)]
pub async fn get(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Plan>, ApiError> {
    match s.db.get_plan(&id).await {
        Err(DbError::NotFound) => Err(ApiError::not_found("plan", &id)),
        other => Ok(Json(other?)),
    }
}

/// Replace a plan
///
/// In force for its customers' next call.
#[utoipa::path(
    put,
    path = "/admin/v1/plans/{id}",
    operation_id = "replace_plan",
    tag = "plans",
    params(("id" = String, Path, description = "The plan's id"), Audited),
    request_body(content = ref("#/components/schemas/PlanReplacement")),
    responses((status = 200, description = "The plan as stored", body = Plan), ApiError)
)]
pub async fn replace(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Audited(actor): Audited,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<Plan>, ApiError> {
    let plan = plan_from(v, Some(&id))?;
    match s.db.update_plan(&plan, &actor).await {
        Err(DbError::NotFound) => return Err(ApiError::not_found("plan", &id)),
        other => other?,
    }
    s.catalog.put_plan(plan.clone());
    s.changes
        .publish(RecordChange::Plan(plan.id.to_string()))
        .await;
    Ok(Json(plan))
}

/// Delete a plan
///
/// Only a plan no customer is on (409 otherwise).
#[utoipa::path(
    delete,
    path = "/admin/v1/plans/{id}",
    operation_id = "delete_plan",
    tag = "plans",
    params(("id" = String, Path, description = "The plan's id"), Audited),
    responses((status = 200, description = "The plan is gone", body = Deleted), ApiError)
)]
pub async fn remove(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Audited(actor): Audited,
) -> Result<Json<Deleted>, ApiError> {
    match s.db.delete_plan(&id, &actor).await {
        Err(DbError::NotFound) => return Err(ApiError::not_found("plan", &id)),
        other => other?,
    }
    s.catalog.remove_plan(&id);
    s.changes.publish(RecordChange::Plan(id.clone())).await;
    Ok(Json(Deleted { id, deleted: true }))
}
