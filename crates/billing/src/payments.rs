//! x402 payments in the ledger: written with the usage event they paid for
//! (same transaction), listed for finance, read back for reconciliation and
//! for the payment claims a restarted gateway must still refuse.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use paygate_core::{Micros, Payment, PaymentState, UsageEvent};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::db::values_clause;
use crate::paging::{page, Page};
use crate::{Backend, Database, DbError};

/// One payment as finance sees it (`GET /admin/v1/payments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PaymentRow {
    /// The call it paid for (its usage event's `request_id`).
    pub request_id: String,
    pub ts: DateTime<Utc>,
    /// The customer, or `x402:<payer>` for a caller without credentials.
    pub customer_id: String,
    pub key_id: String,
    pub route: String,
    pub period: String,
    pub payer: String,
    #[schema(value_type = i64)]
    pub amount_micros: Micros,
    /// Atomic units of the asset signed for, as a decimal string.
    pub amount_units: String,
    pub asset: String,
    pub network: String,
    pub nonce: String,
    pub valid_before: i64,
    #[schema(required = true)]
    pub transaction: Option<String>,
    /// `settled`, `failed` or `settlement_unknown`.
    #[schema(example = "settled")]
    pub state: String,
    #[schema(required = true)]
    pub reason: Option<String>,
}

/// Which payments to list: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub state: Option<PaymentState>,
    pub customer_id: Option<String>,
    pub payer: Option<String>,
}

/// A payment identity still worth refusing: its authorization is valid
/// until `valid_before` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveClaim {
    /// `network:payer:nonce`, as the gateway claims it.
    pub identity: String,
    pub valid_before: i64,
}

/// Rows per INSERT statement (16 binds each).
const ROWS_PER_STATEMENT: usize = 64;

/// Inserts the payments of events that are new in this transaction, a
/// statement per 64 (one round trip to SQLite's worker thread each, not one
/// per payment), and answers the request ids whose payment it holds now. A
/// payment whose identity the ledger already holds (settled or unknown) is
/// not written twice: the unique index is the last word.
pub(crate) async fn insert<'e>(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[&'e UsageEvent],
) -> Result<HashSet<&'e str>, DbError> {
    let paid: Vec<(&UsageEvent, &Payment)> = events
        .iter()
        .filter_map(|e| e.payment.as_ref().map(|p| (*e, p)))
        .collect();
    if paid.is_empty() {
        return Ok(HashSet::new());
    }
    for chunk in paid.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO payments (request_id, ts_us, customer_id, key_id, route, period, payer, \
             amount_micros, amount_units, asset, network, nonce, valid_before, tx_hash, state, reason) \
             {} ON CONFLICT DO NOTHING",
            values_clause(backend, chunk.len(), 16)
        );
        let mut q = sqlx::query(&sql);
        for (e, p) in chunk {
            q = q
                .bind(e.request_id.as_str())
                .bind(e.ts.timestamp_micros())
                .bind(e.customer_id.as_str())
                .bind(e.key_id.as_str())
                .bind(e.route.as_str())
                .bind(e.period.as_str())
                .bind(p.payer.as_str())
                .bind(p.amount_micros)
                .bind(p.amount_units.as_str())
                .bind(p.asset.as_str())
                .bind(p.network.as_str())
                .bind(p.nonce.as_str())
                .bind(p.valid_before)
                .bind(p.transaction.as_deref())
                .bind(p.state.as_str())
                .bind(p.reason.as_deref());
        }
        q.execute(&mut *conn).await?;
    }
    // The events are new in this transaction, so a row with one of their ids
    // was written just now: those are the payments the ledger holds.
    let mut stored = HashSet::with_capacity(paid.len());
    for chunk in paid.chunks(ROWS_PER_STATEMENT * 8) {
        let list = match backend {
            Backend::Postgres => (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", "),
            Backend::Sqlite => vec!["?"; chunk.len()].join(", "),
        };
        let sql = format!("SELECT request_id FROM payments WHERE request_id IN ({list})");
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for (e, _) in chunk {
            q = q.bind(e.request_id.as_str());
        }
        let ids: HashSet<String> = q.fetch_all(&mut *conn).await?.into_iter().collect();
        stored.extend(
            chunk
                .iter()
                .map(|(e, _)| e.request_id.as_str())
                .filter(|id| ids.contains(*id)),
        );
    }
    Ok(stored)
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<PaymentRow, DbError> {
    let ts_us: i64 = r.try_get("ts_us")?;
    Ok(PaymentRow {
        request_id: r.try_get("request_id")?,
        ts: crate::rating::from_micros(ts_us),
        customer_id: r.try_get("customer_id")?,
        key_id: r.try_get("key_id")?,
        route: r.try_get("route")?,
        period: r.try_get("period")?,
        payer: r.try_get("payer")?,
        amount_micros: r.try_get("amount_micros")?,
        amount_units: r.try_get("amount_units")?,
        asset: r.try_get("asset")?,
        network: r.try_get("network")?,
        nonce: r.try_get("nonce")?,
        valid_before: r.try_get("valid_before")?,
        transaction: r.try_get("tx_hash")?,
        state: r.try_get("state")?,
        reason: r.try_get("reason")?,
    })
}

impl Database {
    /// Payments in time order (then `request_id`), one page after
    /// `starting_after` (a `request_id`).
    pub async fn list_payments(
        &self,
        f: &PaymentFilter,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<Page<PaymentRow>, DbError> {
        let micros = |t: Option<DateTime<Utc>>| t.map_or(-1, |t| t.timestamp_micros());
        // The cursor row's position, so a page starts right after it.
        let (after_ts, after_id) = match starting_after {
            Some(id) => {
                let ts: Option<i64> =
                    sqlx::query_scalar("SELECT ts_us FROM payments WHERE request_id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                match ts {
                    Some(ts) => (ts, id.to_owned()),
                    None => {
                        return Err(DbError::Invalid(format!(
                            "starting_after: no payment {id:?}"
                        )))
                    }
                }
            }
            None => (-1, String::new()),
        };
        let rows = sqlx::query(
            "SELECT * FROM payments \
             WHERE ($1 < 0 OR ts_us >= $1) AND ($2 < 0 OR ts_us < $2) \
             AND ($3 = '' OR state = $3) AND ($4 = '' OR customer_id = $4) \
             AND ($5 = '' OR payer = $5) \
             AND ($6 < 0 OR ts_us > $6 OR (ts_us = $6 AND request_id > $7)) \
             ORDER BY ts_us, request_id LIMIT $8",
        )
        .bind(micros(f.from))
        .bind(micros(f.to))
        .bind(f.state.map_or("", PaymentState::as_str))
        .bind(f.customer_id.as_deref().unwrap_or(""))
        .bind(
            f.payer
                .as_deref()
                .map(str::to_ascii_lowercase)
                .unwrap_or_default(),
        )
        .bind(after_ts)
        .bind(after_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(page(rows, limit))
    }

    /// Payments whose settlement is unknown, oldest first: money that may
    /// have moved without the call being served.
    pub async fn unknown_payments(&self) -> Result<Vec<PaymentRow>, DbError> {
        let rows = sqlx::query(
            "SELECT * FROM payments WHERE state = 'settlement_unknown' ORDER BY ts_us, request_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Identities of payments that were used (settled or unknown) and whose
    /// authorization is still valid at `now`: a fresh store must refuse
    /// them again.
    pub async fn live_claims(&self, now: DateTime<Utc>) -> Result<Vec<LiveClaim>, DbError> {
        let rows = sqlx::query(
            "SELECT network, payer, nonce, valid_before FROM payments \
             WHERE state <> 'failed' AND valid_before > $1",
        )
        .bind(now.timestamp())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let network: String = r.try_get("network")?;
                let payer: String = r.try_get("payer")?;
                let nonce: String = r.try_get("nonce")?;
                Ok(LiveClaim {
                    identity: format!("{network}:{payer}:{nonce}"),
                    valid_before: r.try_get("valid_before")?,
                })
            })
            .collect()
    }
}
