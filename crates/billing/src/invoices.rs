//! Invoices: one per customer and billing period. Until its period is closed
//! an invoice is a draft, computed from the ledger whenever it is read; closing
//! writes it once, with the next invoice number, and it never changes again
//! (the database refuses UPDATE and DELETE on finalized invoices). Usage that
//! reaches the ledger for a finalized period is billed on the customer's next
//! open invoice as adjustment lines: the ledger now minus what was billed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use paygate_core::period::{Period, PeriodName};
use paygate_core::records::CustomerRecord;
use paygate_core::Micros;
use serde::Serialize;
use sqlx::Row;

use crate::aggregate::{Dimension, Filter};
use crate::audit::{self, Actor, Change};
use crate::db::ts;
use crate::paging::{page, Page};
use crate::rating::{self, Amount, Charge, ChargeKey, Line, LineKind, PlanSpan};
use crate::{Database, DbError};

/// Plans are priced in US dollars (SPEC §4: 1 USD = 1,000,000 micros).
pub const CURRENCY: &str = "USD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Draft,
    Finalized,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    pub id: String,
    /// Sequential over all invoices, given at finalization; none for a draft.
    #[schema(required = true)]
    pub number: Option<i64>,
    pub customer_id: String,
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}$")]
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub status: Status,
    pub currency: &'static str,
    pub lines: Vec<Line>,
    #[schema(value_type = i64)]
    pub total_micros: Micros,
    /// The part of the total already paid from prepaid credits (the payg lines).
    #[schema(value_type = i64)]
    pub credits_applied_micros: Micros,
    /// `total_micros - credits_applied_micros`.
    #[schema(value_type = i64)]
    pub amount_due_micros: Micros,
    #[schema(required = true)]
    pub finalized_at: Option<DateTime<Utc>>,
}

/// What closing a period did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Closed {
    pub period: String,
    /// The invoices finalized by this call (none when called again).
    pub data: Vec<Invoice>,
    pub has_more: bool,
}

/// Invoice ids name their customer and period: `inv_<YYYY-MM>_<customer id>`.
pub fn invoice_id(customer_id: &str, period: PeriodName) -> String {
    format!("inv_{period}_{customer_id}")
}

/// The customer and period an invoice id names, if it is well formed.
pub fn parse_invoice_id(id: &str) -> Option<(PeriodName, &str)> {
    let rest = id.strip_prefix("inv_")?;
    let (period, customer) = (rest.get(..7)?, rest.get(8..)?);
    if rest.as_bytes().get(7) != Some(&b'_') || customer.is_empty() {
        return None;
    }
    Some((period.parse().ok()?, customer))
}

fn first_period(c: &CustomerRecord) -> PeriodName {
    PeriodName::of(Period::containing(c.anchor_day, c.created_at).start)
}

/// The period `c` is in at `now`.
pub fn current_period(c: &CustomerRecord, now: DateTime<Utc>) -> PeriodName {
    PeriodName::of(Period::containing(c.anchor_day, now).start)
}

/// The total and the credits applied. x402 lines were paid when their calls
/// were made: they are listed but never add to the total or the amount due.
fn totals(lines: &[Line]) -> (Micros, Micros) {
    let total = lines
        .iter()
        .filter(|l| !l.charge.is_prepaid_elsewhere())
        .map(|l| l.amount_micros)
        .sum();
    let credits = lines
        .iter()
        .filter(|l| l.charge == Charge::Payg)
        .map(|l| l.amount_micros)
        .sum();
    (total, credits)
}

impl Database {
    async fn plan_history(&self, customer_id: &str) -> Result<Vec<PlanSpan>, DbError> {
        let rows = sqlx::query(
            "SELECT plan_id, monthly_fee_micros, effective_us FROM customer_plans \
             WHERE customer_id = $1 ORDER BY effective_us, id",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PlanSpan {
                    plan_id: r.try_get("plan_id")?,
                    monthly_fee_micros: r.try_get("monthly_fee_micros")?,
                    effective: rating::from_micros(r.try_get("effective_us")?),
                })
            })
            .collect()
    }

    async fn finalized_periods(&self, customer_id: &str) -> Result<BTreeSet<PeriodName>, DbError> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT period FROM invoices WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
    }

    /// Usage charges of one customer's period as the ledger has them now.
    async fn charges(
        &self,
        customer_id: &str,
        period: PeriodName,
    ) -> Result<BTreeMap<ChargeKey, Amount>, DbError> {
        let filter = Filter {
            customer_id: Some(customer_id.to_owned()),
            period: Some(period.to_string()),
            ..Filter::default()
        };
        let by = [
            Dimension::Route,
            Dimension::OveragePrice,
            Dimension::UnitPrice,
        ];
        Ok(rating::usage_charges(&self.aggregate(&filter, &by).await?))
    }

    /// Fees of a period billed on finalized invoices so far (fee and
    /// proration lines, and fee adjustments on later invoices).
    async fn fee_billed(&self, customer_id: &str, period: PeriodName) -> Result<Micros, DbError> {
        let billed: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(l.amount_micros) AS BIGINT) \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE i.customer_id = $1 AND l.source_period = $2 AND l.charge = 'fee'",
        )
        .bind(customer_id)
        .bind(period.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(billed.unwrap_or(0))
    }

    /// Usage charges of a period billed on finalized invoices so far.
    async fn billed(
        &self,
        customer_id: &str,
        period: PeriodName,
    ) -> Result<BTreeMap<ChargeKey, Amount>, DbError> {
        let rows = sqlx::query(
            "SELECT l.route, l.charge, l.unit_price_micros, \
             CAST(SUM(l.quantity) AS BIGINT) AS quantity, CAST(SUM(l.amount_micros) AS BIGINT) AS amount \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE i.customer_id = $1 AND l.source_period = $2 AND l.charge <> 'fee' \
             GROUP BY l.route, l.charge, l.unit_price_micros",
        )
        .bind(customer_id)
        .bind(period.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let charge: String = r.try_get("charge")?;
            let charge = Charge::parse(&charge)
                .ok_or_else(|| DbError::Corrupt(format!("invoice line charge {charge:?}")))?;
            let route: Option<String> = r.try_get("route")?;
            out.insert(
                (
                    route.unwrap_or_default(),
                    charge,
                    r.try_get("unit_price_micros")?,
                ),
                Amount {
                    quantity: r.try_get("quantity")?,
                    amount_micros: r.try_get("amount")?,
                },
            );
        }
        Ok(out)
    }

    /// The draft of `c`'s invoice for `name`, from the ledger as it is now.
    /// `finalized`: the periods of `c` already finalized.
    async fn draft(
        &self,
        c: &CustomerRecord,
        name: PeriodName,
        finalized: &BTreeSet<PeriodName>,
    ) -> Result<Invoice, DbError> {
        let cid = c.id.as_str();
        let period = Period::named(c.anchor_day, name);
        let label = name.to_string();
        let history = self.plan_history(cid).await?;
        let mut lines = rating::fee_lines(&period, &label, &history);
        lines.extend(rating::usage_lines(&label, &self.charges(cid, name).await?));
        // What changed since the finalized periods right before this one were
        // invoiced: late usage, and plan changes dated inside them.
        let first = first_period(c);
        let mut late = Vec::new();
        let mut f = name.prev();
        while f >= first && finalized.contains(&f) {
            let f_label = f.to_string();
            let fee_now = rating::fee_lines(&Period::named(c.anchor_day, f), &f_label, &history)
                .iter()
                .map(|l| l.amount_micros)
                .sum();
            let fee = rating::fee_adjustment(&f_label, fee_now, self.fee_billed(cid, f).await?);
            let now = self.charges(cid, f).await?;
            let billed = self.billed(cid, f).await?;
            let usage = rating::adjustment_lines(&f_label, &now, &billed);
            late.push(fee.into_iter().chain(usage).collect::<Vec<_>>());
            f = f.prev();
        }
        lines.extend(late.into_iter().rev().flatten());
        let (total, credits) = totals(&lines);
        Ok(Invoice {
            id: invoice_id(cid, name),
            number: None,
            customer_id: cid.to_owned(),
            period: label,
            period_start: period.start,
            period_end: period.end,
            status: Status::Draft,
            currency: CURRENCY,
            lines,
            total_micros: total,
            credits_applied_micros: credits,
            amount_due_micros: total - credits,
            finalized_at: None,
        })
    }

    async fn load_finalized(&self, id: &str) -> Result<Option<Invoice>, DbError> {
        let Some(r) = sqlx::query("SELECT * FROM invoices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let lines =
            sqlx::query("SELECT * FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no")
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|l| {
                    let kind: String = l.try_get("kind")?;
                    let charge: String = l.try_get("charge")?;
                    Ok(Line {
                        kind: LineKind::parse(&kind)
                            .ok_or_else(|| DbError::Corrupt(format!("line kind {kind:?}")))?,
                        charge: Charge::parse(&charge)
                            .ok_or_else(|| DbError::Corrupt(format!("line charge {charge:?}")))?,
                        source_period: l.try_get("source_period")?,
                        description: l.try_get("description")?,
                        route: l.try_get("route")?,
                        quantity: l.try_get("quantity")?,
                        unit_price_micros: l.try_get("unit_price_micros")?,
                        amount_micros: l.try_get("amount_micros")?,
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()?;
        let period: String = r.try_get("period")?;
        let customer_id: String = r.try_get("customer_id")?;
        let c = self.get_customer(&customer_id).await?;
        let name: PeriodName = period
            .parse()
            .map_err(|_| DbError::Corrupt(format!("invoice period {period:?}")))?;
        let bounds = Period::named(c.anchor_day, name);
        let total: Micros = r.try_get("total_micros")?;
        let credits: Micros = r.try_get("credits_applied_micros")?;
        Ok(Some(Invoice {
            id: r.try_get("id")?,
            number: Some(r.try_get("number")?),
            customer_id,
            period,
            period_start: bounds.start,
            period_end: bounds.end,
            status: Status::Finalized,
            currency: CURRENCY,
            lines,
            total_micros: total,
            credits_applied_micros: credits,
            amount_due_micros: total - credits,
            finalized_at: Some(ts(&r.try_get::<String, _>("finalized_at")?)?),
        }))
    }

    /// The periods `c` has an invoice for: from its first period to its
    /// current one, and on to the one after the last finalized, where usage
    /// recorded after a close is billed.
    fn invoice_periods(
        c: &CustomerRecord,
        finalized: &BTreeSet<PeriodName>,
        now: DateTime<Utc>,
    ) -> Vec<PeriodName> {
        let mut last = current_period(c, now);
        if let Some(f) = finalized.last() {
            last = last.max(f.next());
        }
        let mut out = Vec::new();
        let mut p = first_period(c);
        while p <= last {
            out.push(p);
            p = p.next();
        }
        out
    }

    /// `c`'s invoice for `name`: the finalized one, else the draft; `None`
    /// when the customer has no such period.
    pub async fn invoice_for(
        &self,
        c: &CustomerRecord,
        name: PeriodName,
        now: DateTime<Utc>,
    ) -> Result<Option<Invoice>, DbError> {
        if let Some(inv) = self
            .load_finalized(&invoice_id(c.id.as_str(), name))
            .await?
        {
            return Ok(Some(inv));
        }
        let finalized = self.finalized_periods(c.id.as_str()).await?;
        if !Self::invoice_periods(c, &finalized, now).contains(&name) {
            return Ok(None);
        }
        Ok(Some(self.draft(c, name, &finalized).await?))
    }

    pub async fn get_invoice(&self, id: &str, now: DateTime<Utc>) -> Result<Invoice, DbError> {
        let (name, customer) = parse_invoice_id(id).ok_or(DbError::NotFound)?;
        let c = self.get_customer(customer).await?;
        self.invoice_for(&c, name, now)
            .await?
            .ok_or(DbError::NotFound)
    }

    /// Invoices ordered by id (period, then customer), drafts included.
    pub async fn list_invoices(
        &self,
        customer_id: Option<&str>,
        period: Option<PeriodName>,
        limit: u32,
        after: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Page<Invoice>, DbError> {
        let customers = match customer_id {
            Some(id) => vec![self.get_customer(id).await?],
            None => self.load_plans_and_customers().await?.1,
        };
        // Ids first (cheap), then only the page's invoices are computed.
        let mut ids: Vec<(String, usize, PeriodName)> = Vec::new();
        for (i, c) in customers.iter().enumerate() {
            let finalized = self.finalized_periods(c.id.as_str()).await?;
            for p in Self::invoice_periods(c, &finalized, now) {
                if period.is_none_or(|want| want == p) {
                    ids.push((invoice_id(c.id.as_str(), p), i, p));
                }
            }
        }
        ids.sort();
        let start = after.map_or(0, |a| ids.partition_point(|(id, ..)| id.as_str() <= a));
        let end = ids.len().min(start + limit as usize + 1);
        let mut out = Vec::new();
        for (_, i, p) in &ids[start..end] {
            if let Some(inv) = self.invoice_for(&customers[*i], *p, now).await? {
                out.push(inv);
            }
        }
        Ok(page(out, limit))
    }

    /// Finalizes every started invoice of `name` not finalized yet; calling
    /// it again finalizes only what is left (customers whose period started
    /// since). A period may be closed before it ends: usage and plan changes
    /// dated in it afterwards are billed as adjustments on the next invoice.
    pub async fn close_period(
        &self,
        name: PeriodName,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Closed, DbError> {
        if name > PeriodName::of(now) {
            return Err(DbError::Invalid(format!("period {name} has not started")));
        }
        let customers = self.load_plans_and_customers().await?.1;
        let mut tx = self.begin_write().await?;
        // The counter's row lock serializes closes: numbers stay gapless and
        // a concurrent close of the same period finds the invoices written.
        let mut number: i64 = sqlx::query_scalar(
            "UPDATE sequences SET value = value WHERE name = 'invoice_number' RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        let finalized_at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut done = Vec::new();
        for c in &customers {
            let cid = c.id.as_str();
            if name < first_period(c) || Period::named(c.anchor_day, name).start > now {
                continue;
            }
            let id = invoice_id(cid, name);
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invoices WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
            if exists > 0 {
                continue;
            }
            let finalized = self.finalized_periods(cid).await?;
            let mut inv = self.draft(c, name, &finalized).await?;
            number += 1;
            sqlx::query(
                "INSERT INTO invoices (id, number, customer_id, period, currency, total_micros, \
                 credits_applied_micros, finalized_at, line_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&id)
            .bind(number)
            .bind(cid)
            .bind(&inv.period)
            .bind(CURRENCY)
            .bind(inv.total_micros)
            .bind(inv.credits_applied_micros)
            .bind(&finalized_at)
            .bind(inv.lines.len() as i64)
            .execute(&mut *tx)
            .await?;
            for (i, l) in inv.lines.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO invoice_lines (invoice_id, line_no, kind, charge, source_period, \
                     description, route, quantity, unit_price_micros, amount_micros) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&id)
                .bind(i as i64 + 1)
                .bind(l.kind.as_str())
                .bind(l.charge.as_str())
                .bind(&l.source_period)
                .bind(&l.description)
                .bind(l.route.as_deref())
                .bind(l.quantity)
                .bind(l.unit_price_micros)
                .bind(l.amount_micros)
                .execute(&mut *tx)
                .await?;
            }
            inv.number = Some(number);
            inv.status = Status::Finalized;
            inv.finalized_at = Some(ts(&finalized_at)?);
            done.push(inv);
        }
        sqlx::query("UPDATE sequences SET value = $1 WHERE name = 'invoice_number'")
            .bind(number)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO closed_periods (period, closed_at) VALUES ($1, $2) ON CONFLICT (period) DO NOTHING")
            .bind(name.to_string())
            .bind(&finalized_at)
            .execute(&mut *tx)
            .await?;
        let label = name.to_string();
        let change = Change {
            action: "invoices.close",
            resource: "period",
            resource_id: &label,
            before: None,
            after: Some(serde_json::json!({
                "finalized": done.iter().map(|i| serde_json::json!({
                    "id": i.id, "number": i.number, "total_micros": i.total_micros,
                })).collect::<Vec<_>>(),
            })),
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(Closed {
            period: label,
            data: done,
            has_more: false,
        })
    }
}

impl Invoice {
    /// One CSV row per line (RFC 4180, header row), each carrying the
    /// invoice's identity; the amount column, x402 lines left out, sums to
    /// `total_micros`.
    pub fn write_csv<W: std::io::Write>(invoices: &[Invoice], out: W) -> Result<W, csv::Error> {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(out);
        // SPEC §5: the JSON field names. A row is a line; the invoice's own
        // fields (`id` … `total_micros`) repeat on each of its lines.
        w.write_record([
            "id",
            "number",
            "customer_id",
            "period",
            "status",
            "currency",
            "total_micros",
            "kind",
            "description",
            "route",
            "source_period",
            "quantity",
            "unit_price_micros",
            "amount_micros",
        ])?;
        for inv in invoices {
            let status = match inv.status {
                Status::Draft => "draft",
                Status::Finalized => "finalized",
            };
            for l in &inv.lines {
                w.write_record([
                    inv.id.as_str(),
                    &inv.number.map(|n| n.to_string()).unwrap_or_default(),
                    &inv.customer_id,
                    &inv.period,
                    status,
                    inv.currency,
                    &inv.total_micros.to_string(),
                    l.kind.as_str(),
                    &l.description,
                    l.route.as_deref().unwrap_or(""),
                    &l.source_period,
                    &l.quantity.to_string(),
                    &l.unit_price_micros.to_string(),
                    &l.amount_micros.to_string(),
                ])?;
            }
        }
        w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_ids_round_trip() {
        let p: PeriodName = "2026-11".parse().unwrap();
        let id = invoice_id("acme_co-1", p);
        assert_eq!(id, "inv_2026-11_acme_co-1");
        assert_eq!(parse_invoice_id(&id), Some((p, "acme_co-1")));
        for bad in [
            "inv_2026-11",
            "inv_2026-11_",
            "inv_2026-13_x",
            "in_2026-11_x",
            "inv_2026-11x",
            "",
        ] {
            assert_eq!(parse_invoice_id(bad), None, "{bad}");
        }
    }
}
