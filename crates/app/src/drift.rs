//! The store's counters checked against the ledger: `paygate billing
//! reconcile` and the `paygate_usage_drift` gauge. The comparison itself is
//! the billing crate's (`paygate_billing::reconcile`); this module reads the
//! store's side for it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use paygate_billing::reconcile::{self, Drift, DriftTotal, StoreReading};
use paygate_billing::{Database, DbError};
use paygate_core::metering::limits_for;
use paygate_core::period::PeriodName;
use paygate_core::records::CustomerRecord;
use paygate_core::Plan;
use paygate_metrics::Metrics;
use paygate_store::{Catalog, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("customer {customer}: store: {source}")]
    Store {
        customer: String,
        source: StoreError,
    },
    #[error("ledger: {0}")]
    Ledger(#[source] DbError),
}

/// The store's counters of one customer, without reserving anything.
async fn read_store(
    store: &dyn Store,
    c: &CustomerRecord,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<StoreReading, StoreError> {
    let (limits, _) = limits_for(plan, 1, c, now);
    match store.peek(c.id.as_str(), &limits).await {
        Ok(s) => Ok(StoreReading::Counters(s)),
        Err(StoreError::NotSeeded) => Ok(StoreReading::NotSeeded),
        Err(e) => Err(e),
    }
}

/// Store reads in flight at once (Redis pipelines them on one connection).
const READS_IN_FLIGHT: usize = 64;

/// Checks every customer (whose plan is known) against the ledger, each for
/// `period_of(customer)`. The ledger's side is read in a few grouped
/// queries whatever the number of customers.
pub async fn drifts(
    db: &Database,
    store: &dyn Store,
    customers: &[Arc<CustomerRecord>],
    plan_of: impl Fn(&str) -> Option<Arc<Plan>>,
    period_of: impl Fn(&CustomerRecord) -> PeriodName,
) -> Result<Vec<Drift>, DriftError> {
    let now = Utc::now();
    let ledger = db
        .counters_of(customers, now)
        .await
        .map_err(DriftError::Ledger)?;
    // Collected first: an iterator adapter's closure held across the awaits
    // below would make this future not `Send` (a known rustc limitation).
    let checks: Vec<_> = customers
        .iter()
        .filter_map(|c| {
            let plan = plan_of(c.plan_id.as_str())?;
            let counters = ledger.get(c.id.as_str()).copied().unwrap_or_default();
            let period = period_of(c);
            Some(async move {
                let reading =
                    read_store(store, c, &plan, now)
                        .await
                        .map_err(|source| DriftError::Store {
                            customer: c.id.to_string(),
                            source,
                        })?;
                Ok(reconcile::compare(
                    c,
                    reading,
                    counters,
                    plan.quota.is_some(),
                    period,
                    now,
                ))
            })
        })
        .collect();
    stream::iter(checks)
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
}

/// Keeps `paygate_usage_drift` current: every customer, its current period.
/// Each round reads the ledger's sums in a few grouped queries and each
/// customer's counters from the store: at the default of
/// once a minute (`usage.drift_interval_ms`) that is negligible and still
/// flags a lasting drift long before an invoice is closed. A round in which
/// a customer cannot be checked (store or database down) leaves the gauge as
/// it was: a partial sum would read as "less drift" exactly when something
/// is wrong.
pub async fn watch(
    db: Database,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    every: Duration,
) {
    // Not at once: the counters were just seeded from the ledger, and a
    // round over every customer would compete with the start's first calls
    // and admin changes (with 100,000 customers it delayed one by a second).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        match round(&db, &catalog, store.as_ref()).await {
            Ok(total) => {
                metrics
                    .usage_drift
                    .with_label_values(&["quota_units"])
                    .set(total.quota_units);
                metrics
                    .usage_drift
                    .with_label_values(&["credits_micros"])
                    .set(total.credits_micros);
            }
            Err(e) => tracing::warn!(error = %e, "usage drift not measured this round"),
        }
    }
}

/// One round of [`watch`]: each customer checked for its own current period.
pub async fn round(
    db: &Database,
    catalog: &Catalog,
    store: &dyn Store,
) -> Result<DriftTotal, DriftError> {
    let now = Utc::now();
    let rows = drifts(
        db,
        store,
        &catalog.customers(),
        |id| catalog.plan(id),
        |c| paygate_billing::invoices::current_period(c, now),
    )
    .await?;
    let mut total = DriftTotal::default();
    for d in &rows {
        total.add(d);
    }
    Ok(total)
}
