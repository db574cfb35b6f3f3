//! The one aggregation over the ledger that usage reports and invoices both
//! use, so the two can never disagree: sums of `usage_daily` rows, filtered
//! and grouped by a fixed set of columns. A report bounded inside a day
//! (`from`/`to` not at UTC midnight) is summed from `usage_events` instead,
//! exactly, at the price of reading the events of its range.

use chrono::{DateTime, NaiveTime, Utc};
use paygate_core::Micros;
use sqlx::Row;

use crate::{Backend, Database, DbError};

/// A column to group by. Only these names ever reach the SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Day,
    Route,
    Key,
    /// Per-unit overage price (invoices).
    OveragePrice,
    /// Per-unit pay-per-call price (invoices).
    UnitPrice,
}

impl Dimension {
    fn column(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Route => "route",
            Self::Key => "key_id",
            Self::OveragePrice => "overage_price_micros",
            Self::UnitPrice => "unit_price_micros",
        }
    }
}

/// Which usage to sum: `from` inclusive, `to` exclusive.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub customer_id: Option<String>,
    pub period: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Filter {
    /// Whether the daily rollup answers it: both bounds at UTC midnight.
    fn whole_days(&self) -> bool {
        [self.from, self.to]
            .iter()
            .flatten()
            .all(|t| t.time() == NaiveTime::MIN)
    }
}

/// One group's sums; the grouped-by fields are set, the others `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sums {
    pub day: Option<String>,
    pub route: Option<String>,
    pub key_id: Option<String>,
    pub overage_price_micros: Micros,
    pub unit_price_micros: Micros,
    pub calls: i64,
    pub billable_calls: i64,
    pub units: i64,
    pub overage_units: i64,
    pub amount_micros: Micros,
    pub credits_micros: Micros,
    /// Calls paid with a settled x402 payment, and what they paid (not part
    /// of `amount_micros`: that money never passes through quota or credits).
    pub x402_calls: i64,
    pub x402_amount_micros: Micros,
}

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        self.calls += o.calls;
        self.billable_calls += o.billable_calls;
        self.units += o.units;
        self.overage_units += o.overage_units;
        self.amount_micros += o.amount_micros;
        self.credits_micros += o.credits_micros;
        self.x402_calls += o.x402_calls;
        self.x402_amount_micros += o.x402_amount_micros;
    }
}

fn day_text(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The UTC day of an event, `YYYY-MM-DD`, from its `ts_us`.
fn event_day(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "strftime('%Y-%m-%d', ts_us / 1000000, 'unixepoch')",
        Backend::Postgres => {
            "to_char(to_timestamp(ts_us / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        }
    }
}

impl Database {
    /// Sums of the ledger per group, ordered by the grouped-by columns.
    pub async fn aggregate(&self, f: &Filter, by: &[Dimension]) -> Result<Vec<Sums>, DbError> {
        let cols: Vec<&str> = by.iter().map(|d| d.column()).collect();
        let group = if cols.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {0} ORDER BY {0}", cols.join(", "))
        };
        // SUM of BIGINT is NUMERIC on Postgres: cast back so one decoder fits both.
        let sums = "CAST(COALESCE(SUM(calls), 0) AS BIGINT) AS calls, \
             CAST(COALESCE(SUM(billable_calls), 0) AS BIGINT) AS billable_calls, \
             CAST(COALESCE(SUM(units), 0) AS BIGINT) AS units, \
             CAST(COALESCE(SUM(overage_units), 0) AS BIGINT) AS overage_units, \
             CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) AS amount_micros, \
             CAST(COALESCE(SUM(credits_micros), 0) AS BIGINT) AS credits_micros, \
             CAST(COALESCE(SUM(x402_calls), 0) AS BIGINT) AS x402_calls, \
             CAST(COALESCE(SUM(x402_amount_micros), 0) AS BIGINT) AS x402_amount_micros";
        let select = cols.iter().map(|c| format!("{c}, ")).collect::<String>();
        let sql = if f.whole_days() {
            format!(
                "SELECT {select}{sums} FROM usage_daily \
                 WHERE ($1 = '' OR customer_id = $1) AND ($2 = '' OR period = $2) \
                 AND ($3 = '' OR day >= $3) AND ($4 = '' OR day < $4){group}"
            )
        } else {
            if by
                .iter()
                .any(|d| matches!(d, Dimension::OveragePrice | Dimension::UnitPrice))
            {
                return Err(DbError::Invalid(
                    "prices are grouped by whole days only".into(),
                ));
            }
            // The same columns, computed per event (and its settled payment).
            let events = format!(
                "SELECT {} AS day, u.route, u.key_id, 1 AS calls, u.billable AS billable_calls, \
                 u.units, u.overage_units, u.amount_micros, u.credits_micros, \
                 CASE WHEN p.request_id IS NULL THEN 0 ELSE 1 END AS x402_calls, \
                 COALESCE(p.amount_micros, 0) AS x402_amount_micros \
                 FROM usage_events u LEFT JOIN payments p \
                 ON p.request_id = u.request_id AND p.state = 'settled' \
                 WHERE ($1 = '' OR u.customer_id = $1) AND ($2 = '' OR u.period = $2) \
                 AND ($3 < 0 OR u.ts_us >= $3) AND ($4 < 0 OR u.ts_us < $4)",
                event_day(self.backend()).replace("ts_us", "u.ts_us")
            );
            format!("SELECT {select}{sums} FROM ({events}) AS e{group}")
        };
        let q = sqlx::query(&sql)
            .bind(f.customer_id.as_deref().unwrap_or(""))
            .bind(f.period.as_deref().unwrap_or(""));
        let q = if f.whole_days() {
            q.bind(day_text(f.from)).bind(day_text(f.to))
        } else {
            let micros = |t: Option<DateTime<Utc>>| t.map_or(-1, |t| t.timestamp_micros());
            q.bind(micros(f.from)).bind(micros(f.to))
        };
        let rows = q.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut s = Sums {
                calls: r.try_get("calls")?,
                billable_calls: r.try_get("billable_calls")?,
                units: r.try_get("units")?,
                overage_units: r.try_get("overage_units")?,
                amount_micros: r.try_get("amount_micros")?,
                credits_micros: r.try_get("credits_micros")?,
                x402_calls: r.try_get("x402_calls")?,
                x402_amount_micros: r.try_get("x402_amount_micros")?,
                ..Sums::default()
            };
            // Without GROUP BY an empty table still yields one row of zeros.
            if cols.is_empty() && s.calls == 0 {
                continue;
            }
            for d in by {
                match d {
                    Dimension::Day => s.day = Some(r.try_get("day")?),
                    Dimension::Route => s.route = Some(r.try_get("route")?),
                    Dimension::Key => s.key_id = Some(r.try_get("key_id")?),
                    Dimension::OveragePrice => {
                        s.overage_price_micros = r.try_get("overage_price_micros")?
                    }
                    Dimension::UnitPrice => s.unit_price_micros = r.try_get("unit_price_micros")?,
                }
            }
            out.push(s);
        }
        Ok(out)
    }
}
