//! `paygate billing reconcile` and the `paygate_usage_drift` gauge: the
//! store's counters checked against the ledger (`paygate_billing::reconcile`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use paygate_billing::reconcile::{self, Drift};
use paygate_billing::Database;
use paygate_config::StoreBackend;
use paygate_core::period::PeriodName;
use paygate_core::Plan;
use paygate_gateway::admission::limits_for;
use paygate_metrics::Metrics;
use paygate_store::{Catalog, CustomerRecord, Store};

use crate::app;

/// Checks every customer against the ledger for `period`.
async fn drifts(
    db: &Database,
    store: &dyn Store,
    customers: &[CustomerRecord],
    plan_of: impl Fn(&str) -> Option<Plan>,
    period: PeriodName,
) -> anyhow::Result<Vec<Drift>> {
    let now = Utc::now();
    let mut out = Vec::with_capacity(customers.len());
    for c in customers {
        let Some(plan) = plan_of(c.plan_id.as_str()) else {
            continue;
        };
        let (limits, _) = limits_for(&plan, 1, c, now);
        let d = reconcile::check(db, store, c, &limits, plan.quota.is_some(), period, now)
            .await
            .with_context(|| format!("customer {}", c.id))?;
        out.push(d);
    }
    Ok(out)
}

/// `paygate billing reconcile --period YYYY-MM`: prints the drift per
/// customer; exit 0 without drift, 1 with drift, 2 when it cannot compare.
pub fn run(path: &Path, period: &str) -> ExitCode {
    let period: PeriodName = match period.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("paygate: --period: {e}");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> anyhow::Result<bool> {
        let config = app::load(path)?;
        if config.store.backend == StoreBackend::Memory {
            anyhow::bail!(
                "store.backend = \"memory\": the counters live inside the serving process; \
                 watch its paygate_usage_drift gauge instead"
            );
        }
        app::control_runtime()?.block_on(async {
            let db = Database::connect(&config.database.url).await?;
            let (store, _) = app::build_store(&config)?;
            store.ping().await.context("store unreachable")?;
            let (plans, customers, _) = db.load_catalog().await?;
            let plan_of = |id: &str| plans.iter().find(|p| p.id.as_str() == id).cloned();
            let rows = drifts(&db, store.as_ref(), &customers, plan_of, period).await?;
            print!("{}", reconcile::table(period, &rows));
            Ok(rows.iter().all(Drift::is_clean))
        })
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("paygate: {e:#}");
            ExitCode::from(2)
        }
    }
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
        match drift_round(&db, &catalog, store.as_ref()).await {
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
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "usage drift not measured this round")
            }
        }
    }
}

/// One round of [`watch`]: each customer checked for its own current period.
async fn drift_round(
    db: &Database,
    catalog: &Catalog,
    store: &dyn Store,
) -> anyhow::Result<reconcile::DriftTotal> {
    let customers: Vec<CustomerRecord> =
        catalog.customers().iter().map(|c| (**c).clone()).collect();
    let plan_of = |id: &str| catalog.plan(id).map(|p| (*p).clone());
    let mut total = reconcile::DriftTotal::default();
    for c in &customers {
        let period = paygate_billing::invoices::current_period(c, Utc::now());
        for d in drifts(db, store, std::slice::from_ref(c), &plan_of, period).await? {
            total.add(&d);
        }
    }
    Ok(total)
}
