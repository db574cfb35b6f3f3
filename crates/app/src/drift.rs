//! The store's counters checked against the ledger: `paygate billing
//! reconcile` and the `paygate_usage_drift` gauge. The comparison itself is
//! the billing crate's (`paygate_billing::reconcile`); this module reads the
//! store's side for it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
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
    #[error("customer {customer}: ledger: {source}")]
    Ledger { customer: String, source: DbError },
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

/// Checks every customer (whose plan is known) against the ledger for `period`.
pub async fn drifts(
    db: &Database,
    store: &dyn Store,
    customers: &[CustomerRecord],
    plan_of: impl Fn(&str) -> Option<Plan>,
    period: PeriodName,
) -> Result<Vec<Drift>, DriftError> {
    let now = Utc::now();
    let mut out = Vec::with_capacity(customers.len());
    for c in customers {
        let Some(plan) = plan_of(c.plan_id.as_str()) else {
            continue;
        };
        let customer = c.id.to_string();
        let reading =
            read_store(store, c, &plan, now)
                .await
                .map_err(|source| DriftError::Store {
                    customer: customer.clone(),
                    source,
                })?;
        let d = reconcile::check(db, c, reading, plan.quota.is_some(), period, now)
            .await
            .map_err(|source| DriftError::Ledger { customer, source })?;
        out.push(d);
    }
    Ok(out)
}

/// Keeps `paygate_usage_drift` current: every customer, its current period.
/// Each round reads two sums per customer from the rollup: at the default of
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
    let mut tick = tokio::time::interval(every);
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
    let customers: Vec<CustomerRecord> =
        catalog.customers().iter().map(|c| (**c).clone()).collect();
    let plan_of = |id: &str| catalog.plan(id).map(|p| (*p).clone());
    let mut total = DriftTotal::default();
    for c in &customers {
        let period = paygate_billing::invoices::current_period(c, Utc::now());
        for d in drifts(db, store, std::slice::from_ref(c), plan_of, period).await? {
            total.add(&d);
        }
    }
    Ok(total)
}
