//! Finance: usage reports, invoices, closing a period, and the audit log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use paygate_billing::aggregate::{Dimension, Filter};
use paygate_billing::audit::AuditFilter;
use paygate_billing::invoices::{Closed, Invoice};
use paygate_billing::payments::{PaymentFilter, PaymentRow};
use paygate_billing::report::UsageReport;
use paygate_billing::DbError;
use paygate_core::period::PeriodName;
use paygate_core::PaymentState;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{Audited, JsonBody, Paging, Params};
use crate::handlers::customers;
use crate::handlers::idempotency::IdempotencyKey;
use crate::views::{AuditList, InvoiceList, PaymentList};
use crate::{AdminState, ApiError};

/// JSON (the default) or CSV (RFC 4180, header row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
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

/// A time range's bounds, each optional.
type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `from` (inclusive) and `to` (exclusive), in that order.
fn range(from: Option<&str>, to: Option<&str>) -> Result<Range, ApiError> {
    let (from, to) = (bound("from", from)?, bound("to", to)?);
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::BadRequest(
                "from: must be before to (to is exclusive)".into(),
            ));
        }
    }
    Ok((from, to))
}

fn period(raw: Option<&str>) -> Result<Option<PeriodName>, ApiError> {
    raw.filter(|s| !s.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|e: paygate_core::ValidationError| ApiError::BadRequest(e.to_string()))
        })
        .transpose()
}

/// A customer the filter may name: a known one, or an anonymous x402 payer
/// (`x402:<address>`), whose usage is grouped under that id.
async fn known_customer(s: &AdminState, id: Option<&str>) -> Result<(), ApiError> {
    if let Some(id) = id.filter(|id| !id.starts_with("x402:")) {
        customers::load(s, id).await?;
    }
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Only this customer's usage.
    customer_id: Option<String>,
    /// From this UTC day (`YYYY-MM-DD`, its midnight) or RFC 3339 time, inclusive.
    from: Option<String>,
    /// To this UTC day (`YYYY-MM-DD`, its midnight) or RFC 3339 time, exclusive.
    to: Option<String>,
    /// Only this billing period.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$", example = "2026-11")]
    period: Option<String>,
    /// Comma-separated: any of `day`, `route`, `key` (default `day`; empty
    /// for one row of totals).
    #[param(example = "day,route")]
    group_by: Option<String>,
    #[param(value_type = Option<Format>, inline)]
    format: Option<String>,
}

/// Usage report from the ledger
///
/// Grouped by any of day, route and key (default day), with totals.
#[utoipa::path(
    get,
    path = "/admin/v1/usage",
    operation_id = "usage_report",
    tag = "billing",
    params(UsageParams),
    responses(
        (
            status = 200,
            description = "The report; with `format=csv` its rows, without totals",
            content(
                (UsageReport = "application/json"),
                (String = "text/csv", example = "day,calls,billable_calls,units,amount_micros\r\n2026-11-02,3,3,3,51000\r\n"),
            ),
            headers(("Content-Disposition" = String, description = "With `format=csv`: `attachment; filename=\"usage.csv\"`")),
        ),
        ApiError,
    )
)]
pub async fn usage(
    State(s): State<Arc<AdminState>>,
    Params(q): Params<UsageParams>,
) -> Result<Response, ApiError> {
    let fmt = format(q.format.as_deref())?;
    let (from, to) = range(q.from.as_deref(), q.to.as_deref())?;
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceParams {
    /// Only this customer's invoices.
    customer_id: Option<String>,
    /// Only this billing period.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$", example = "2026-11")]
    period: Option<String>,
    #[param(value_type = Option<Format>, inline)]
    format: Option<String>,
}

fn invoices_response(
    list: Vec<Invoice>,
    has_more: bool,
    fmt: Format,
    name: &str,
) -> Result<Response, ApiError> {
    Ok(match fmt {
        Format::Json => Json(InvoiceList {
            data: list,
            has_more,
        })
        .into_response(),
        Format::Csv => csv_response(
            Invoice::write_csv(&list, Vec::new()).map_err(csv_failed)?,
            name,
        ),
    })
}

/// Invoices, finalized and draft
///
/// Finalized invoices and the current drafts (computed from the ledger when read).
#[utoipa::path(
    get,
    path = "/admin/v1/invoices",
    operation_id = "list_invoices",
    tag = "billing",
    params(InvoiceParams, Paging),
    responses(
        (
            status = 200,
            description = "One page of invoices; with `format=csv` one row per invoice line",
            content((InvoiceList = "application/json"), (String = "text/csv")),
            headers(("Content-Disposition" = String, description = "With `format=csv`: `attachment; filename=\"invoices.csv\"`")),
        ),
        ApiError,
    )
)]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatParam {
    #[param(value_type = Option<Format>, inline)]
    format: Option<String>,
}

/// One invoice
#[utoipa::path(
    get,
    path = "/admin/v1/invoices/{id}",
    operation_id = "get_invoice",
    tag = "billing",
    params(("id" = String, Path, description = "`inv_<YYYY-MM>_<customer id>`"), FormatParam),
    responses(
        (
            status = 200,
            description = "The invoice; with `format=csv` one row per line",
            content((Invoice = "application/json"), (String = "text/csv")),
            headers(("Content-Disposition" = String, description = "With `format=csv`: `attachment; filename=\"<id>.csv\"`")),
        ),
        ApiError,
    )
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ClosePeriod)]
pub struct CloseBody {
    /// The billing period to close.
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}$", example = "2026-11")]
    period: String,
}

/// Finalize a period's invoices
///
/// Numbers and stores the period's draft invoices; closing it again
/// finalizes nothing more.
#[utoipa::path(
    post,
    path = "/admin/v1/invoices/close",
    operation_id = "close_period",
    tag = "billing",
    params(IdempotencyKey, Audited),
    request_body = CloseBody,
    responses((status = 200, description = "The invoices this call finalized", body = Closed), ApiError)
)]
pub async fn close(
    State(s): State<Arc<AdminState>>,
    Audited(actor): Audited,
    JsonBody(b): JsonBody<CloseBody>,
) -> Result<(StatusCode, Json<Closed>), ApiError> {
    let name: PeriodName = b.period.parse()?;
    let closed = s.db.close_period(name, &actor, Utc::now()).await?;
    Ok((StatusCode::OK, Json(closed)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only changes to this kind of record: `plan`, `customer` (credits included), `key` or `period`.
    resource: Option<String>,
    /// Only changes to the record with this id.
    resource_id: Option<String>,
}

/// Audit log
///
/// Every admin change, newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    params(AuditParams, Paging),
    responses((status = 200, description = "One page of the audit log", body = AuditList), ApiError)
)]
pub async fn audit(
    State(s): State<Arc<AdminState>>,
    Params(q): Params<AuditParams>,
    page: Paging,
) -> Result<Json<AuditList>, ApiError> {
    let filter = AuditFilter {
        resource: q.resource.filter(|r| !r.is_empty()),
        resource_id: q.resource_id.filter(|r| !r.is_empty()),
    };
    let p =
        s.db.list_audit(&filter, page.limit, page.starting_after.as_deref())
            .await?;
    Ok(Json(AuditList::from(p)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentParams {
    /// From this UTC day (`YYYY-MM-DD`, its midnight) or RFC 3339 time, inclusive.
    from: Option<String>,
    /// To this UTC day (`YYYY-MM-DD`, its midnight) or RFC 3339 time, exclusive.
    to: Option<String>,
    /// Only payments in this state.
    #[param(value_type = Option<String>, pattern = "^(settled|failed|settlement_unknown)$")]
    state: Option<String>,
    /// Only this customer's payments (`x402:<payer>` for callers without credentials).
    customer_id: Option<String>,
    /// Only this payer address's payments.
    payer: Option<String>,
    #[param(value_type = Option<Format>, inline)]
    format: Option<String>,
}

const PAYMENT_COLUMNS: [&str; 16] = [
    "request_id",
    "ts",
    "customer_id",
    "key_id",
    "route",
    "period",
    "payer",
    "amount_micros",
    "amount_units",
    "asset",
    "network",
    "nonce",
    "valid_before",
    "transaction",
    "state",
    "reason",
];

fn payments_csv(rows: &[PaymentRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(PAYMENT_COLUMNS)?;
    for p in rows {
        w.write_record([
            p.request_id.as_str(),
            &p.ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            &p.customer_id,
            &p.key_id,
            &p.route,
            &p.period,
            &p.payer,
            &p.amount_micros.to_string(),
            &p.amount_units,
            &p.asset,
            &p.network,
            &p.nonce,
            &p.valid_before.to_string(),
            p.transaction.as_deref().unwrap_or(""),
            &p.state,
            p.reason.as_deref().unwrap_or(""),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// x402 payments
///
/// Every call paid with x402, with its payer, amount, network, transaction
/// and state (`settled`, `failed`, `settlement_unknown`), oldest first.
#[utoipa::path(
    get,
    path = "/admin/v1/payments",
    operation_id = "list_payments",
    tag = "billing",
    params(PaymentParams, Paging),
    responses(
        (
            status = 200,
            description = "One page of payments; with `format=csv` the same fields as columns",
            content((PaymentList = "application/json"), (String = "text/csv")),
            headers(("Content-Disposition" = String, description = "With `format=csv`: `attachment; filename=\"payments.csv\"`")),
        ),
        ApiError,
    )
)]
pub async fn payments(
    State(s): State<Arc<AdminState>>,
    Params(q): Params<PaymentParams>,
    page: Paging,
) -> Result<Response, ApiError> {
    let fmt = format(q.format.as_deref())?;
    let (from, to) = range(q.from.as_deref(), q.to.as_deref())?;
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(PaymentState::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state: {raw:?} is not one of settled, failed, settlement_unknown"
            ))
        })?),
    };
    let filter = PaymentFilter {
        from,
        to,
        state,
        customer_id: q.customer_id.filter(|c| !c.is_empty()),
        payer: q.payer.filter(|p| !p.is_empty()),
    };
    let p =
        s.db.list_payments(&filter, page.limit, page.starting_after.as_deref())
            .await?;
    Ok(match fmt {
        Format::Json => Json(PaymentList::from(p)).into_response(),
        Format::Csv => csv_response(payments_csv(&p.data).map_err(csv_failed)?, "payments.csv"),
    })
}
