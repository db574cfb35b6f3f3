//! `GET /admin/v1/usage`: the ledger's usage per day, route and key, as JSON
//! or as CSV (RFC 4180, header row), with totals.

use serde::Serialize;

use crate::aggregate::{Dimension, Filter, Sums};
use crate::{Database, DbError};

/// One report row; only the grouped-by fields are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Date)]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key_id: Option<String>,
    pub calls: i64,
    pub billable_calls: i64,
    pub units: i64,
    pub amount_micros: i64,
    /// Calls paid with a settled x402 payment.
    pub x402_calls: i64,
    /// What those payments brought in (not part of `amount_micros`).
    pub x402_amount_micros: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub calls: i64,
    pub billable_calls: i64,
    pub units: i64,
    pub amount_micros: i64,
    pub x402_calls: i64,
    pub x402_amount_micros: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub data: Vec<UsageRow>,
    /// Always false: a report is answered whole (rows are days × routes × keys).
    pub has_more: bool,
    pub totals: Totals,
    #[serde(skip)]
    group_by: Vec<Dimension>,
}

fn row(s: Sums) -> UsageRow {
    UsageRow {
        day: s.day,
        route: s.route,
        key_id: s.key_id,
        calls: s.calls,
        billable_calls: s.billable_calls,
        units: s.units,
        amount_micros: s.amount_micros,
        x402_calls: s.x402_calls,
        x402_amount_micros: s.x402_amount_micros,
    }
}

impl Database {
    /// `group_by` may hold `Day`, `Route` and `Key`; empty gives one row of totals.
    pub async fn usage_report(
        &self,
        filter: &Filter,
        group_by: &[Dimension],
    ) -> Result<UsageReport, DbError> {
        let groups = self.aggregate(filter, group_by).await?;
        let mut totals = Totals::default();
        for g in &groups {
            totals.calls += g.calls;
            totals.billable_calls += g.billable_calls;
            totals.units += g.units;
            totals.amount_micros += g.amount_micros;
            totals.x402_calls += g.x402_calls;
            totals.x402_amount_micros += g.x402_amount_micros;
        }
        Ok(UsageReport {
            data: groups.into_iter().map(row).collect(),
            has_more: false,
            totals,
            group_by: group_by.to_vec(),
        })
    }
}

impl UsageReport {
    /// RFC 4180: CRLF line ends, a header row of the JSON field names,
    /// fields quoted when they need it. No totals row, so a column sums to
    /// the JSON total.
    pub fn to_csv(&self) -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        let mut header: Vec<&str> = Vec::new();
        for d in &self.group_by {
            header.push(match d {
                Dimension::Day => "day",
                Dimension::Route => "route",
                Dimension::Key => "key_id",
                Dimension::OveragePrice | Dimension::UnitPrice => continue,
            });
        }
        header.extend([
            "calls",
            "billable_calls",
            "units",
            "amount_micros",
            "x402_calls",
            "x402_amount_micros",
        ]);
        w.write_record(&header)?;
        for r in &self.data {
            let mut rec: Vec<String> = Vec::with_capacity(header.len());
            for d in &self.group_by {
                let v = match d {
                    Dimension::Day => &r.day,
                    Dimension::Route => &r.route,
                    Dimension::Key => &r.key_id,
                    Dimension::OveragePrice | Dimension::UnitPrice => continue,
                };
                rec.push(v.clone().unwrap_or_default());
            }
            for n in [
                r.calls,
                r.billable_calls,
                r.units,
                r.amount_micros,
                r.x402_calls,
                r.x402_amount_micros,
            ] {
                rec.push(n.to_string());
            }
            w.write_record(&rec)?;
        }
        w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    }
}
