//! The daily rollup of the ledger (`usage_daily`): what reports and invoices
//! read. It is updated in the transaction that inserts the events, with only
//! the events that were new, so a replayed event changes neither.

use std::collections::{BTreeMap, HashSet};

use paygate_core::{Micros, PaymentState, UsageEvent};
use sqlx::AnyConnection;

use crate::db::values_clause;
use crate::Backend;
use crate::DbError;

/// One rollup row's identity: a customer's calls on one UTC day, one route,
/// one key, at one price.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DailyKey {
    customer_id: String,
    period: String,
    day: String,
    route: String,
    key_id: String,
    overage_price_micros: Micros,
    unit_price_micros: Micros,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DailySums {
    calls: i64,
    billable_calls: i64,
    units: i64,
    overage_units: i64,
    amount_micros: Micros,
    credits_micros: Micros,
    x402_calls: i64,
    x402_amount_micros: Micros,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The prices a call was charged at, recovered from its amounts: the store
/// charges `overage_units × overage price` plus `units × pay-per-call price`
/// in credits, so both divide exactly.
fn prices(e: &UsageEvent) -> (Micros, Micros) {
    if !e.billable {
        return (0, 0);
    }
    let overage_micros = e.amount_micros - e.credits_micros;
    let overage_price = match int(e.overage_units) {
        0 => 0,
        n => overage_micros / n,
    };
    let unit_price = match int(e.units) {
        0 => 0,
        n => e.credits_micros / n,
    };
    (overage_price, unit_price)
}

/// Sums events per rollup row. A `BTreeMap`, so rows are written in one
/// order by every writer and two writers cannot deadlock on them.
/// `payments`: the request ids whose x402 payment the ledger holds (a
/// payment it refused as a second use of an identity is not counted).
pub(crate) fn roll_up<'a>(
    events: impl IntoIterator<Item = &'a UsageEvent>,
    payments: &HashSet<&str>,
) -> BTreeMap<DailyKey, DailySums> {
    let mut rows: BTreeMap<DailyKey, DailySums> = BTreeMap::new();
    for e in events {
        let (overage_price_micros, unit_price_micros) = prices(e);
        let key = DailyKey {
            customer_id: e.customer_id.clone(),
            period: e.period.clone(),
            day: e.ts.format("%Y-%m-%d").to_string(),
            route: e.route.clone(),
            key_id: e.key_id.clone(),
            overage_price_micros,
            unit_price_micros,
        };
        let s = rows.entry(key).or_default();
        s.calls += 1;
        if e.billable {
            s.billable_calls += 1;
            s.units += int(e.units);
            s.overage_units += int(e.overage_units);
            s.amount_micros += e.amount_micros;
            s.credits_micros += e.credits_micros;
        }
        let held = payments.contains(e.request_id.as_str());
        if let Some(p) = e
            .payment
            .as_ref()
            .filter(|p| held && p.state == PaymentState::Settled)
        {
            s.x402_calls += 1;
            s.x402_amount_micros += p.amount_micros;
        }
    }
    rows
}

/// Rows per upsert statement (15 binds each).
const ROWS_PER_STATEMENT: usize = 64;

/// Adds the sums to `usage_daily`.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &BTreeMap<DailyKey, DailySums>,
) -> Result<(), DbError> {
    let rows: Vec<_> = rows.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO usage_daily (customer_id, period, day, route, key_id, overage_price_micros, \
             unit_price_micros, calls, billable_calls, units, overage_units, amount_micros, credits_micros, \
             x402_calls, x402_amount_micros) \
             {} ON CONFLICT (customer_id, period, day, route, key_id, overage_price_micros, unit_price_micros) \
             DO UPDATE SET calls = usage_daily.calls + excluded.calls, \
             billable_calls = usage_daily.billable_calls + excluded.billable_calls, \
             units = usage_daily.units + excluded.units, \
             overage_units = usage_daily.overage_units + excluded.overage_units, \
             amount_micros = usage_daily.amount_micros + excluded.amount_micros, \
             credits_micros = usage_daily.credits_micros + excluded.credits_micros, \
             x402_calls = usage_daily.x402_calls + excluded.x402_calls, \
             x402_amount_micros = usage_daily.x402_amount_micros + excluded.x402_amount_micros",
            values_clause(backend, chunk.len(), 15)
        );
        let mut q = sqlx::query(&sql);
        for (k, s) in chunk {
            q = q
                .bind(k.customer_id.as_str())
                .bind(k.period.as_str())
                .bind(k.day.as_str())
                .bind(k.route.as_str())
                .bind(k.key_id.as_str())
                .bind(k.overage_price_micros)
                .bind(k.unit_price_micros)
                .bind(s.calls)
                .bind(s.billable_calls)
                .bind(s.units)
                .bind(s.overage_units)
                .bind(s.amount_micros)
                .bind(s.credits_micros)
                .bind(s.x402_calls)
                .bind(s.x402_amount_micros);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
