//! `/admin/v1/customers`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use paygate_billing::records::{CustomerPatch, NewCustomer};
use paygate_billing::DbError;
use paygate_core::{CustomerId, PlanId, ValidationError};
use paygate_store::{changes, CustomerRecord};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::extract::{Audited, JsonBody, Paging};
use crate::handlers::idempotency::IdempotencyKey;
use crate::views::{Customer, CustomerList};
use crate::{AdminState, ApiError};

fn check_email(email: &str) -> Result<(), ValidationError> {
    match email.split_once('@') {
        Some((user, domain))
            if !user.is_empty() && !domain.is_empty() && !email.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(ValidationError::new("email", "must be an email address")),
    }
}

fn check_name(name: &str) -> Result<(), ValidationError> {
    if name.trim().is_empty() {
        return Err(ValidationError::new("name", "must not be empty"));
    }
    Ok(())
}

/// The plan must exist before a customer can be put on it.
async fn existing_plan(s: &AdminState, id: PlanId) -> Result<PlanId, ApiError> {
    match s.db.get_plan(id.as_str()).await {
        Ok(_) => Ok(id),
        Err(DbError::NotFound) => Err(ApiError::Invalid(format!("plan_id: no plan with id {id}"))),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCustomer)]
pub struct CreateBody {
    /// Chosen by paygate (`cus_…`) when left out.
    id: Option<CustomerId>,
    #[schema(min_length = 1)]
    name: String,
    #[schema(format = Email)]
    email: String,
    /// An existing plan.
    plan_id: PlanId,
}

/// Create a customer
///
/// Its billing period starts on today's day of month (UTC).
#[utoipa::path(
    post,
    path = "/admin/v1/customers",
    operation_id = "create_customer",
    tag = "customers",
    params(IdempotencyKey, Audited),
    request_body = CreateBody,
    responses((status = 201, description = "The new customer", body = Customer), ApiError)
)]
pub async fn create(
    State(s): State<Arc<AdminState>>,
    Audited(actor): Audited,
    JsonBody(b): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    check_name(&b.name)?;
    check_email(&b.email)?;
    let plan_id = existing_plan(&s, b.plan_id).await?;
    let id = match b.id {
        Some(id) => id,
        None => CustomerId::new(format!("cus_{}", uuid::Uuid::now_v7().simple()))?,
    };
    let rec =
        s.db.create_customer(
            NewCustomer {
                id,
                name: b.name,
                email: b.email,
                plan_id,
            },
            &actor,
            chrono::Utc::now(),
        )
        .await?;
    changes::customer_created(&s.catalog, &s.changes, s.store.as_ref(), &rec).await;
    Ok((StatusCode::CREATED, Json(Customer::from(&rec))))
}

/// List customers
///
/// In id order.
#[utoipa::path(
    get,
    path = "/admin/v1/customers",
    operation_id = "list_customers",
    tag = "customers",
    params(Paging),
    responses((status = 200, description = "One page of customers", body = CustomerList), ApiError)
)]
pub async fn list(
    State(s): State<Arc<AdminState>>,
    page: Paging,
) -> Result<Json<CustomerList>, ApiError> {
    let p =
        s.db.list_customers(page.limit, page.starting_after.as_deref())
            .await?;
    Ok(Json(CustomerList {
        data: p.data.iter().map(Customer::from).collect(),
        has_more: p.has_more,
    }))
}

/// Get a customer
#[utoipa::path(
    get,
    path = "/admin/v1/customers/{id}",
    operation_id = "get_customer",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses((status = 200, description = "The customer", body = Customer), ApiError)
)]
pub async fn get(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Customer>, ApiError> {
    Ok(Json(Customer::from(&load(&s, &id).await?)))
}

/// The customer or a 404 naming it.
pub async fn load(s: &AdminState, id: &str) -> Result<CustomerRecord, ApiError> {
    match s.db.get_customer(id).await {
        Err(DbError::NotFound) => Err(ApiError::not_found("customer", id)),
        other => Ok(other?),
    }
}

/// The fields to change; those left out keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CustomerPatch)]
pub struct PatchBody {
    #[schema(min_length = 1)]
    name: Option<String>,
    #[schema(format = Email)]
    email: Option<String>,
    /// An existing plan.
    plan_id: Option<PlanId>,
}

/// Change name, email or plan
///
/// A plan change is in force for the next call and keeps the quota already
/// used this period.
#[utoipa::path(
    patch,
    path = "/admin/v1/customers/{id}",
    operation_id = "update_customer",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id"), Audited),
    request_body = PatchBody,
    responses((status = 200, description = "The customer as changed", body = Customer), ApiError)
)]
pub async fn patch(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Audited(actor): Audited,
    JsonBody(b): JsonBody<PatchBody>,
) -> Result<Json<Customer>, ApiError> {
    load(&s, &id).await?;
    if let Some(n) = &b.name {
        check_name(n)?;
    }
    if let Some(e) = &b.email {
        check_email(e)?;
    }
    let plan_id = match b.plan_id {
        Some(p) => Some(existing_plan(&s, p).await?),
        None => None,
    };
    let rec =
        s.db.patch_customer(
            &id,
            CustomerPatch {
                name: b.name,
                email: b.email,
                plan_id,
            },
            &actor,
            chrono::Utc::now(),
        )
        .await?;
    changes::customer_stored(&s.catalog, &s.changes, &rec).await;
    Ok(Json(Customer::from(&rec)))
}
