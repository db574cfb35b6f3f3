//! Finance: usage reports, invoices, closing a period, and the audit log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use paygate_billing::aggregate::{Dimension, Filter};
use paygate_billing::audit::AuditFilter;
use paygate_billing::invoices::Invoice;
use paygate_billing::DbError;
use paygate_core::period::PeriodName;
use serde::Deserialize;
use serde_json::json;

use crate::extract::{Audited, JsonBody, Paging, Params};
use crate::handlers::customers;
use crate::{AdminState, ApiError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn format(raw: Option<&str>) -> Result<Format, ApiError> {
    match raw.unwrap_or("json") {
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        other => Err(ApiError::BadRequest(format!(
            "format: {other:?} is not one of json, csv"
        ))),
    }
}

fn csv_response(body: Vec<u8>, filename: &str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn csv_failed(e: csv::Error) -> ApiError {
    ApiError::Internal(format!("writing CSV: {e}"))
}

/// A day boundary: `YYYY-MM-DD`, or an RFC 3339 time at UTC midnight
/// (the ledger is rolled up by UTC day).
/// A report bound: a UTC day `YYYY-MM-DD` (its midnight) or an RFC 3339 time.
fn bound(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(Some(d.and_time(chrono::NaiveTime::MIN).and_utc()));
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name}: {raw:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"
            ))
        })
}

fn period(raw: Option<&str>) -> Result<Option<PeriodName>, ApiError> {
    raw.filter(|s| !s.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|e: paygate_core::ValidationError| ApiError::BadRequest(e.to_string()))
        })
        .transpose()
}

async fn known_customer(s: &AdminState, id: Option<&str>) -> Result<(), ApiError> {
    if let Some(id) = id {
        customers::load(s, id).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct UsageParams {
    customer_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    period: Option<String>,
    group_by: Option<String>,
    format: Option<String>,
}

/// `GET /admin/v1/usage`: grouped by any of day, route, key (default day).
pub async fn usage(
    State(s): State<Arc<AdminState>>,
    Params(q): Params<UsageParams>,
) -> Result<Response, ApiError> {
    let fmt = format(q.format.as_deref())?;
    let from = bound("from", q.from.as_deref())?;
    let to = bound("to", q.to.as_deref())?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::BadRequest(
                "from: must be before to (to is exclusive)".into(),
            ));
        }
    }
    let mut group_by = Vec::new();
    for g in q.group_by.as_deref().unwrap_or("day").split(',') {
        let d = match g.trim() {
            "" => continue,
            "day" => Dimension::Day,
            "route" => Dimension::Route,
            "key" | "key_id" => Dimension::Key,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "group_by: {other:?} is not one of day, route, key"
                )))
            }
        };
        if !group_by.contains(&d) {
            group_by.push(d);
        }
    }
    let customer_id = q.customer_id.filter(|c| !c.is_empty());
    known_customer(&s, customer_id.as_deref()).await?;
    let filter = Filter {
        customer_id,
        period: period(q.period.as_deref())?.map(|p| p.to_string()),
        from,
        to,
    };
    let report = s.db.usage_report(&filter, &group_by).await?;
    Ok(match fmt {
        Format::Json => Json(report).into_response(),
        Format::Csv => csv_response(report.to_csv().map_err(csv_failed)?, "usage.csv"),
    })
}

#[derive(Deserialize)]
pub struct InvoiceParams {
    customer_id: Option<String>,
    period: Option<String>,
    format: Option<String>,
}

fn invoices_response(
    list: Vec<Invoice>,
    has_more: bool,
    fmt: Format,
    name: &str,
) -> Result<Response, ApiError> {
    Ok(match fmt {
        Format::Json => Json(json!({"data": list, "has_more": has_more})).into_response(),
        Format::Csv => csv_response(
            Invoice::write_csv(&list, Vec::new()).map_err(csv_failed)?,
            name,
        ),
    })
}

/// `GET /admin/v1/invoices`: finalized invoices and the current drafts.
pub async fn list_invoices(
    State(s): State<Arc<AdminState>>,
    Params(q): Params<InvoiceParams>,
    page: Paging,
) -> Result<Response, ApiError> {
    let fmt = format(q.format.as_deref())?;
    let period = period(q.period.as_deref())?;
    let customer_id = q.customer_id.filter(|c| !c.is_empty());
    known_customer(&s, customer_id.as_deref()).await?;
    let p =
        s.db.list_invoices(
            customer_id.as_deref(),
            period,
            page.limit,
            page.starting_after.as_deref(),
            Utc::now(),
        )
        .await?;
    invoices_response(p.data, p.has_more, fmt, "invoices.csv")
}

#[derive(Deserialize)]
pub struct FormatParam {
    format: Option<String>,
}

/// `GET /admin/v1/invoices/{id}[?format=csv]`.
pub async fn get_invoice(
    State(s): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Params(q): Params<FormatParam>,
) -> Result<Response, ApiError> {
    let fmt = format(q.format.as_deref())?;
    let inv = match s.db.get_invoice(&id, Utc::now()).await {
        Err(DbError::NotFound) => return Err(ApiError::not_found("invoice", &id)),
        other => other?,
    };
    Ok(match fmt {
        Format::Json => Json(inv).into_response(),
        Format::Csv => invoices_response(vec![inv], false, fmt, &format!("{id}.csv"))?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    period: String,
}

/// `POST /admin/v1/invoices/close {period}`.
pub async fn close(
    State(s): State<Arc<AdminState>>,
    Audited(actor): Audited,
    JsonBody(b): JsonBody<CloseBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name: PeriodName = b.period.parse()?;
    let closed = s.db.close_period(name, &actor, Utc::now()).await?;
    Ok((StatusCode::OK, Json(json!(closed))))
}

#[derive(Deserialize)]
pub struct AuditParams {
    resource: Option<String>,
    resource_id: Option<String>,
}

/// `GET /admin/v1/audit`: newest first.
pub async fn audit(
    State(s): State<Arc<AdminState>>,
    Params(q): Params<AuditParams>,
    page: Paging,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = AuditFilter {
        resource: q.resource.filter(|r| !r.is_empty()),
        resource_id: q.resource_id.filter(|r| !r.is_empty()),
    };
    let p =
        s.db.list_audit(&filter, page.limit, page.starting_after.as_deref())
            .await?;
    Ok(Json(json!({"data": p.data, "has_more": p.has_more})))
}
