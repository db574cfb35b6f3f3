//! The usage ledger: events in (a batch per transaction, with
//! `ON CONFLICT (request_id) DO NOTHING`, so a replayed event is counted
//! once), and the store's counters back out of it.
//!
//! The ledger is a [`BatchTarget`] of the usage pipeline (`paygate-usage`):
//! embedded, the gateway's usage writer delivers to it directly; in Redis
//! mode the stream consumer does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use paygate_core::metering::Counters;
use paygate_core::period::Period;
use paygate_core::records::CustomerRecord;
use paygate_core::{Micros, UsageEvent};
use paygate_usage::{BatchTarget, DeliveryError, Written};
use sqlx::Row;

use crate::db::values_clause;
use crate::rollup;
use crate::{Backend, Database, DbError};

/// Rows per INSERT statement: 15 binds each, 3,840 a statement, far below
/// SQLite's 32,766 and Postgres's 65,535; four times fewer statements (each a
/// hop to sqlx's SQLite thread) than at 64 rows.
const ROWS_PER_STATEMENT: usize = 256;

/// The ledger as the embedded usage writer's target. Replays are safe:
/// `insert_events` skips `request_id`s already present.
#[async_trait::async_trait]
impl BatchTarget for Database {
    async fn write(&self, batch: &[UsageEvent]) -> Result<Written, DeliveryError> {
        self.insert_events(batch)
            .await
            .map(Written::Ledger)
            .map_err(DbError::into_delivery)
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl Database {
    /// Inserts events, skipping `request_id`s already present; returns how
    /// many were new. One transaction; statements of at most [`ROWS_PER_STATEMENT`]
    /// rows, so the few distinct statement texts stay in sqlx's prepared-statement
    /// cache instead of being parsed again for every batch. Only the rows
    /// inserted now reach the rollup: a replayed event, or one sent twice in
    /// the same batch, is counted once.
    pub async fn insert_events(&self, events: &[UsageEvent]) -> Result<u64, DbError> {
        if events.is_empty() {
            return Ok(0);
        }
        if self.backend() == Backend::Sqlite {
            // Replays are rare (a restart's spill file, a redelivered stream
            // batch): first assume every event is new, which spares a lookup
            // per event, and take the careful path only when that was wrong.
            if let Some(n) = self.insert_events_with(events, Fresh::Assumed).await? {
                return Ok(n);
            }
        }
        match self.insert_events_with(events, Fresh::Checked).await? {
            Some(n) => Ok(n),
            None => Err(DbError::Corrupt(
                "usage insert: rows written differ from the events found new".into(),
            )),
        }
    }

    /// One transaction: the events' rows, their payments, the rollup.
    /// `None` (nothing committed) when `Fresh::Assumed` turned out wrong,
    /// or when SQLite wrote other rows than the ones found new.
    async fn insert_events_with(
        &self,
        events: &[UsageEvent],
        how: Fresh,
    ) -> Result<Option<u64>, DbError> {
        let mut tx = self.begin_write().await?;
        let mut fresh: HashSet<&str> = HashSet::with_capacity(events.len());
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let all_written = match self.backend() {
                Backend::Sqlite => insert_chunk_sqlite(&mut tx, chunk, &mut fresh, how).await?,
                Backend::Postgres => {
                    insert_chunk_returning(&mut tx, chunk, &mut fresh).await?;
                    true
                }
            };
            if !all_written {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
        }
        // `fresh` names each new request once; taking it out as the events go
        // by keeps a second copy of one in the same batch out of the rollup.
        let new_events: Vec<&UsageEvent> = events
            .iter()
            .filter(|e| fresh.remove(e.request_id.as_str()))
            .collect();
        // Payments first: the rollup counts only those the ledger holds.
        let payments = crate::payments::insert(&mut tx, self.backend(), &new_events).await?;
        let rows = rollup::roll_up(new_events.iter().copied(), &payments);
        rollup::apply(&mut tx, self.backend(), &rows).await?;
        tx.commit().await?;
        Ok(Some(new_events.len() as u64))
    }

    /// Prepaid balance: credits granted minus credits spent by billable calls.
    /// Spending is read from the daily rollup, which holds the same sums as
    /// the events in a few rows per day: start-up seeds every customer this way.
    pub async fn credit_balance(&self, customer_id: &str) -> Result<Micros, DbError> {
        let granted: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(amount_micros) AS BIGINT) FROM credit_grants WHERE customer_id = $1",
        )
        .bind(customer_id)
        .fetch_one(&self.pool)
        .await?;
        let spent: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(credits_micros) AS BIGINT) FROM usage_daily WHERE customer_id = $1",
        )
        .bind(customer_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(granted.unwrap_or(0) - spent.unwrap_or(0))
    }

    /// Quota units used by billable calls admitted in the billing period `period`.
    pub async fn units_in_period(&self, customer_id: &str, period: &str) -> Result<u64, DbError> {
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(units) AS BIGINT) FROM usage_daily WHERE customer_id = $1 AND period = $2",
        )
        .bind(customer_id)
        .bind(period)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(used.unwrap_or(0)).unwrap_or(0))
    }

    /// The store counters of one customer as the ledger says they are at `now`.
    pub async fn counters(
        &self,
        c: &CustomerRecord,
        now: DateTime<Utc>,
    ) -> Result<Counters, DbError> {
        let period = Period::containing(c.anchor_day, now);
        Ok(Counters {
            credits_micros: self.credit_balance(c.id.as_str()).await?,
            quota_used: self.units_in_period(c.id.as_str(), &period.name()).await?,
            period_start: period.start.timestamp(),
        })
    }

    /// [`Database::counters`] of many customers at once, in three grouped
    /// queries whatever their number (start-up with 100,000 customers would
    /// otherwise make 300,000 round trips). Customers without grants or
    /// usage get zeros.
    pub async fn counters_of(
        &self,
        customers: &[Arc<CustomerRecord>],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Counters>, DbError> {
        let granted = sums(
            &self.pool,
            "SELECT customer_id, CAST(SUM(amount_micros) AS BIGINT) FROM credit_grants GROUP BY customer_id",
            None,
        )
        .await?;
        let spent = sums(
            &self.pool,
            "SELECT customer_id, CAST(SUM(credits_micros) AS BIGINT) FROM usage_daily GROUP BY customer_id",
            None,
        )
        .await?;
        // Anchors differ, so a customer's period is this month or the one
        // before: read units of every period in use, keep each customer's own.
        let periods: Vec<(&CustomerRecord, Period, String)> = customers
            .iter()
            .map(|c| {
                let p = Period::containing(c.anchor_day, now);
                let name = p.name();
                (&**c, p, name)
            })
            .collect();
        let names: HashSet<&str> = periods.iter().map(|(_, _, n)| n.as_str()).collect();
        let mut units: HashMap<&str, HashMap<String, i64>> = HashMap::new();
        for name in names {
            let sql = "SELECT customer_id, CAST(SUM(units) AS BIGINT) FROM usage_daily WHERE period = $1 GROUP BY customer_id";
            units.insert(name, sums(&self.pool, sql, Some(name)).await?);
        }
        let of = |m: &HashMap<String, i64>, id: &str| m.get(id).copied().unwrap_or(0);
        Ok(periods
            .iter()
            .map(|(c, period, name)| {
                let id = c.id.as_str();
                let used = units.get(name.as_str()).map_or(0, |m| of(m, id));
                let counters = Counters {
                    credits_micros: of(&granted, id) - of(&spent, id),
                    quota_used: u64::try_from(used).unwrap_or(0),
                    period_start: period.start.timestamp(),
                };
                (id.to_owned(), counters)
            })
            .collect())
    }

    /// Every event the ledger holds, for checks and benchmarks.
    pub async fn events_held(&self) -> Result<u64, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Events per billable flag, for checks and tests.
    pub async fn event_counts(&self, customer_id: &str) -> Result<HashMap<bool, u64>, DbError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT billable, COUNT(*) FROM usage_events WHERE customer_id = $1 GROUP BY billable",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(b, n)| (b != 0, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}

/// `customer_id → sum` from a query grouped by customer, with `$1` bound to
/// `arg` when given.
async fn sums(
    pool: &sqlx::AnyPool,
    sql: &str,
    arg: Option<&str>,
) -> Result<HashMap<String, i64>, DbError> {
    let mut q = sqlx::query_as::<_, (String, Option<i64>)>(sql);
    if let Some(arg) = arg {
        q = q.bind(arg);
    }
    let rows = q.fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(c, n)| (c, n.unwrap_or(0))).collect())
}

const INSERT_EVENTS: &str = "INSERT INTO usage_events (request_id, ts_us, customer_id, key_id, plan_id, \
     route, method, status, billable, units, overage_units, amount_micros, credits_micros, period, latency_us) ";

fn bind_events<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    chunk: &'q [UsageEvent],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for e in chunk {
        q = q
            .bind(e.request_id.as_str())
            .bind(micros(e.ts))
            .bind(e.customer_id.as_str())
            .bind(e.key_id.as_str())
            .bind(e.plan_id.as_str())
            .bind(e.route.as_str())
            .bind(e.method.as_str())
            .bind(i64::from(e.status))
            .bind(i64::from(e.billable))
            .bind(i64::try_from(e.units).unwrap_or(i64::MAX))
            .bind(i64::try_from(e.overage_units).unwrap_or(i64::MAX))
            .bind(e.amount_micros)
            .bind(e.credits_micros)
            .bind(e.period.as_str())
            .bind(i64::try_from(e.latency_us).unwrap_or(i64::MAX));
    }
    q
}

/// Postgres: `RETURNING` names exactly the rows this statement inserted,
/// whatever other writers do meanwhile.
async fn insert_chunk_returning<'e>(
    conn: &mut sqlx::AnyConnection,
    chunk: &'e [UsageEvent],
    fresh: &mut HashSet<&'e str>,
) -> Result<(), DbError> {
    let sql = format!(
        "{INSERT_EVENTS}{} ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
        values_clause(Backend::Postgres, chunk.len(), 15)
    );
    let ids: HashSet<String> = bind_events(sqlx::query(&sql), chunk)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    fresh.extend(
        chunk
            .iter()
            .map(|e| e.request_id.as_str())
            .filter(|id| ids.contains(*id)),
    );
    Ok(())
}

/// Which of a batch's events are new to the ledger (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Every event is taken as new; an insert that skips a row proves
    /// otherwise and the batch is rolled back.
    Assumed,
    /// The ids already present are read first.
    Checked,
}

/// SQLite: the transaction holds the write lock (`BEGIN IMMEDIATE`), so
/// the ids already present, read first in one row, are exactly the ones the
/// insert skips. `RETURNING` would give the same answer, but sqlx's SQLite
/// worker thread hands each returned row over separately, two thread
/// switches per event on the gateway's CPU. Answers whether the insert
/// wrote exactly the rows taken as new; when it did not, the caller rolls
/// the transaction back.
async fn insert_chunk_sqlite<'e>(
    conn: &mut sqlx::AnyConnection,
    chunk: &'e [UsageEvent],
    fresh: &mut HashSet<&'e str>,
    how: Fresh,
) -> Result<bool, DbError> {
    let present: HashSet<String> = match how {
        Fresh::Assumed => HashSet::new(),
        Fresh::Checked => {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT json_group_array(request_id) FROM usage_events WHERE request_id IN ({placeholders})"
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for e in chunk {
                q = q.bind(e.request_id.as_str());
            }
            serde_json::from_str(&q.fetch_one(&mut *conn).await?)
                .map_err(|e| DbError::Corrupt(format!("json_group_array: {e}")))?
        }
    };
    let sql = format!(
        "{INSERT_EVENTS}{} ON CONFLICT (request_id) DO NOTHING",
        values_clause(Backend::Sqlite, chunk.len(), 15)
    );
    let inserted = bind_events(sqlx::query(&sql), chunk)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let before = fresh.len();
    fresh.extend(
        chunk
            .iter()
            .map(|e| e.request_id.as_str())
            .filter(|id| !present.contains(*id)),
    );
    // Two copies of one id in a chunk count once in `fresh` and are
    // written once: the counts still agree.
    Ok(inserted == (fresh.len() - before) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, billable: bool, units: u64, credits: Micros) -> UsageEvent {
        UsageEvent {
            request_id: id.into(),
            ts: Utc::now(),
            customer_id: "c".into(),
            key_id: "k".into(),
            plan_id: "p".into(),
            route: "r".into(),
            method: "GET".into(),
            status: if billable { 200 } else { 500 },
            billable,
            units: if billable { units } else { 0 },
            overage_units: 0,
            amount_micros: credits,
            credits_micros: credits,
            period: "2026-11".into(),
            latency_us: 10,
            payment: None,
        }
    }

    /// Plan `p` and a customer of it whose period starts on `anchor`.
    async fn customer(db: &Database, id: &str, anchor: u32) {
        sqlx::query(
            "INSERT INTO plans (id, body, created_at, updated_at) VALUES ('p', '{}', 'x', 'x') ON CONFLICT DO NOTHING",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO customers (id, name, email, plan_id, anchor_day, created_at) VALUES ($1, 'N', 'n@x', 'p', $2, 'x')")
            .bind(id)
            .bind(i64::from(anchor))
            .execute(&db.pool)
            .await
            .unwrap();
    }

    async fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Database::connect(&url).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn replayed_events_are_stored_once() {
        let (_d, db) = db().await;
        let batch = vec![event("a", true, 1, 0), event("b", false, 1, 0)];
        assert_eq!(db.insert_events(&batch).await.unwrap(), 2);
        assert_eq!(db.insert_events(&batch).await.unwrap(), 0);
        let counts = db.event_counts("c").await.unwrap();
        assert_eq!(counts.get(&true), Some(&1));
        assert_eq!(counts.get(&false), Some(&1));
    }

    /// A batch that is partly a replay takes the careful path: the events
    /// already held are neither written nor rolled up again, and a copy of
    /// an event later in the same batch (another chunk) counts once.
    #[tokio::test]
    async fn a_partly_replayed_batch_counts_only_its_new_events() {
        let (_d, db) = db().await;
        let old: Vec<UsageEvent> = (0..3)
            .map(|i| event(&format!("old{i}"), true, 1, 0))
            .collect();
        assert_eq!(db.insert_events(&old).await.unwrap(), 3);
        // 70 new events (two chunks), the old ones in the middle, and the
        // first new one again at the end.
        let mut batch: Vec<UsageEvent> = (0..70)
            .map(|i| event(&format!("new{i}"), true, 1, 0))
            .collect();
        batch.splice(30..30, old.iter().cloned());
        batch.push(event("new0", true, 1, 0));
        assert_eq!(db.insert_events(&batch).await.unwrap(), 70);
        let counts = db.event_counts("c").await.unwrap();
        assert_eq!(counts.get(&true), Some(&73));
        let period = batch[0].period.clone();
        assert_eq!(db.units_in_period("c", &period).await.unwrap(), 73);
    }

    /// The grouped start-up read agrees with the per-customer one, for
    /// customers whose periods start on different days.
    #[tokio::test]
    async fn counters_of_many_agree_with_counters_of_each() {
        let (_d, db) = db().await;
        let now = Utc::now();
        let mut customers = Vec::new();
        for (id, anchor) in [("c", 1), ("d", 28), ("e", 15)] {
            customer(&db, id, anchor).await;
            customers.push(Arc::new(CustomerRecord {
                id: paygate_core::CustomerId::new(id).unwrap(),
                name: "N".into(),
                email: "n@x".into(),
                plan_id: paygate_core::PlanId::new("p").unwrap(),
                anchor_day: anchor,
                created_at: now,
            }));
        }
        let actor = crate::audit::Actor::system();
        db.grant_credits("c", 1000, "r1", &actor).await.unwrap();
        db.grant_credits("d", 50, "r1", &actor).await.unwrap();
        let mut events = Vec::new();
        for (i, c) in customers.iter().take(2).enumerate() {
            let period = Period::containing(c.anchor_day, now).name();
            for j in 0..3 {
                let mut e = event(&format!("{i}-{j}"), true, 2, 17);
                e.customer_id = c.id.to_string();
                e.period = period.clone();
                events.push(e);
            }
        }
        // Units of another period do not count.
        let mut old = event("old", true, 5, 0);
        old.period = "2001-01".into();
        events.push(old);
        db.insert_events(&events).await.unwrap();
        let all = db.counters_of(&customers, now).await.unwrap();
        assert_eq!(all.len(), 3);
        for c in &customers {
            assert_eq!(
                all[c.id.as_str()],
                db.counters(c, now).await.unwrap(),
                "{}",
                c.id
            );
        }
        assert_eq!(all["c"].quota_used, 6);
        assert_eq!(all["c"].credits_micros, 1000 - 3 * 17);
        assert_eq!(all["e"].quota_used, 0);
    }

    #[tokio::test]
    async fn credits_balance_counts_grants_once_and_billable_spend() {
        let (_d, db) = db().await;
        customer(&db, "c", 1).await;
        use crate::records::Grant;
        assert_eq!(
            db.grant_credits("c", 100, "r1", &crate::audit::Actor::system())
                .await
                .unwrap(),
            Grant::Credited
        );
        assert_eq!(
            db.grant_credits("c", 100, "r1", &crate::audit::Actor::system())
                .await
                .unwrap(),
            Grant::AlreadyCredited
        );
        assert!(matches!(
            db.grant_credits("c", 5, "r1", &crate::audit::Actor::system())
                .await,
            Err(DbError::Conflict(_))
        ));
        db.insert_events(&[event("a", true, 1, 17), event("b", false, 1, 0)])
            .await
            .unwrap();
        assert_eq!(db.credit_balance("c").await.unwrap(), 83);
    }
}
