//! `/admin/v1/plans`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use paygate_billing::DbError;
use paygate_core::Plan;
use paygate_store::RecordChange;
use serde_json::{json, Value};

use crate::extract::{parse_json, Audited, JsonBody, Paging};
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

pub async fn list(State(s): State<Arc<AdminState>>, page: Paging) -> Result<Json<Value>, ApiError> {
    let p =
        s.db.list_plans(page.limit, page.starting_after.as_deref())
            .await?;
    Ok(Json(json!({"data": p.data, "has_more": p.has_more})))
}

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

pub async fn get(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Plan>, ApiError> {
    match s.db.get_plan(&id).await {
        Err(DbError::NotFound) => Err(ApiError::not_found("plan", &id)),
        other => Ok(Json(other?)),
    }
}

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

pub async fn remove(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Audited(actor): Audited,
) -> Result<Json<Value>, ApiError> {
    match s.db.delete_plan(&id, &actor).await {
        Err(DbError::NotFound) => return Err(ApiError::not_found("plan", &id)),
        other => other?,
    }
    s.catalog.remove_plan(&id);
    s.changes.publish(RecordChange::Plan(id.clone())).await;
    Ok(Json(json!({"id": id, "deleted": true})))
}
