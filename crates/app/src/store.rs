//! The configured store, and the workers that rebuild counters the store
//! lost from the ledger: on demand, for the customers calls meet unseeded
//! (those calls wait for it), and all at once, when the store's epoch
//! marker is gone (Redis lost its data).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use paygate_billing::Database;
use paygate_config::{Config, StoreBackend};
use paygate_core::records::CustomerRecord;
use paygate_metrics::Metrics;
use paygate_store::{
    Catalog, Counters, MemoryStore, RedisEndpoint, RedisStore, ReseedOnMiss, SeedMode, Store,
    StoreError,
};
use tokio::sync::{mpsc, watch};

use crate::AppError;

/// How often a process checks that the store still holds its epoch marker.
const EPOCH_CHECK: Duration = Duration::from_millis(250);

/// `store.redis_url`, with the CA of `store.tls_ca_path` when one is set.
pub fn endpoint(config: &Config) -> Result<RedisEndpoint, AppError> {
    let e = RedisEndpoint::new(config.store.redis_url.as_str());
    if config.store.tls_ca_path.is_empty() {
        return Ok(e);
    }
    let pem = std::fs::read(&config.store.tls_ca_path).map_err(|err| AppError::Setting {
        key: "store.tls_ca_path",
        message: format!("cannot read {}: {err}", config.store.tls_ca_path),
    })?;
    Ok(e.with_root_ca(pem))
}

/// What the rebuilding workers need from the store they serve: the
/// customers it asks for, and where to say a round is done.
pub struct Reseeding {
    requests: mpsc::Receiver<String>,
    rounds: Arc<watch::Sender<u64>>,
}

/// The configured store; for Redis also its [`Reseeding`] (see [`reseed`]
/// and [`guard_epoch`]): calls that meet a customer not seeded wait up to
/// `store.timeout_ms` for the workers.
pub fn build(config: &Config) -> Result<(Arc<dyn Store>, Option<Reseeding>), AppError> {
    match config.store.backend {
        StoreBackend::Memory => Ok((Arc::new(MemoryStore::new()), None)),
        StoreBackend::Redis => {
            let timeout = Duration::from_millis(config.store.timeout_ms);
            let redis = RedisStore::connect(endpoint(config)?, &config.store.key_prefix, timeout)?;
            let (tx, rx) = mpsc::channel(16_384);
            let (rounds, rounds_rx) = watch::channel(0);
            let store = ReseedOnMiss::new(redis, tx, rounds_rx, timeout);
            let work = Reseeding {
                requests: rx,
                rounds: Arc::new(rounds),
            };
            Ok((Arc::new(store), Some(work)))
        }
    }
}

/// Starts both rebuilding workers (after the start-up seeding) and marks
/// the store's epoch.
pub async fn start_reseeding(
    db: &Database,
    catalog: &Arc<Catalog>,
    store: &Arc<dyn Store>,
    work: Reseeding,
    metrics: &Metrics,
) {
    let epoch = uuid::Uuid::now_v7().to_string();
    if let Err(e) = store.mark_epoch(&epoch).await {
        tracing::warn!(error = %e, "store epoch not marked; a lost store is found by its calls");
    }
    tokio::spawn(guard_epoch(
        db.clone(),
        Arc::clone(catalog),
        Arc::clone(store),
        Arc::clone(&work.rounds),
        metrics.clone(),
    ));
    tokio::spawn(reseed(
        db.clone(),
        Arc::clone(catalog),
        Arc::clone(store),
        work,
    ));
}

/// Rebuilds, from the ledger, the counters of the customers calls met
/// unseeded (a Redis restarted without persistence, or a new customer on a
/// new Redis). Requests that arrive while a round runs go into the next
/// one; each round is one grouped read and pipelined writes, then wakes
/// the waiting calls.
async fn reseed(db: Database, catalog: Arc<Catalog>, store: Arc<dyn Store>, work: Reseeding) {
    let Reseeding {
        mut requests,
        rounds,
    } = work;
    while let Some(first) = requests.recv().await {
        let mut ids = BTreeSet::from([first]);
        while let Ok(more) = requests.try_recv() {
            ids.insert(more);
        }
        let customers: Vec<_> = ids.iter().filter_map(|id| catalog.customer(id)).collect();
        match rebuild(&db, store.as_ref(), &customers).await {
            Ok(n) if n > 0 => tracing::info!(customers = n, "counters rebuilt from the ledger"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "counters not rebuilt"),
        }
        rounds.send_modify(|n| *n += 1);
    }
}

/// Counters of `customers` from the ledger into the store, where absent
/// (one grouped read, pipelined writes); answers how many customers now
/// have counters in the store, rebuilt or found there.
pub async fn rebuild(
    db: &Database,
    store: &dyn Store,
    customers: &[Arc<CustomerRecord>],
) -> Result<usize, AppError> {
    let counters = db.counters_of(customers, Utc::now()).await?;
    let failed = seed_all(store, &counters, SeedMode::IfAbsent).await;
    if let Some((customer, e)) = failed.first() {
        tracing::warn!(customer = %customer, error = %e, failed = failed.len(), "counters not rebuilt");
    }
    Ok(counters.len() - failed.len())
}

/// Watches the store's epoch marker: when it is gone, the store lost what
/// was seeded (Redis restarted without persistence, or was flushed), and
/// every customer's counters are rebuilt at once, instead of one call at a
/// time; then the marker is set again. Several processes may do this at
/// once: seeds only fill what is absent, and the first marker set stays.
async fn guard_epoch(
    db: Database,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    rounds: Arc<watch::Sender<u64>>,
    metrics: Metrics,
) {
    let mut pause = EPOCH_CHECK;
    loop {
        tokio::time::sleep(pause).await;
        // Unreachable: nothing to tell; a marker present: nothing lost.
        if !matches!(store.epoch().await, Ok(None)) {
            pause = EPOCH_CHECK;
            continue;
        }
        let started = Instant::now();
        let customers = catalog.customers();
        tracing::warn!(
            customers = customers.len(),
            "the store lost its data: rebuilding every customer's counters from the ledger"
        );
        match rebuild(&db, store.as_ref(), &customers).await {
            Ok(in_store) => {
                pause = EPOCH_CHECK;
                let _ = store.mark_epoch(&uuid::Uuid::now_v7().to_string()).await;
                metrics.store_rebuilds.inc();
                rounds.send_modify(|n| *n += 1);
                tracing::warn!(
                    customers = customers.len(),
                    in_store,
                    ms = started.elapsed().as_millis() as u64,
                    "counters rebuilt from the ledger"
                );
            }
            Err(e) => {
                // The ledger is down too: try again, less and less often.
                pause = (pause * 2).min(Duration::from_secs(10));
                tracing::error!(error = %e, "counters not rebuilt; trying again");
            }
        }
    }
}

/// Store calls in flight at once while seeding: Redis pipelines them on
/// one connection, so 100,000 customers take seconds, not minutes.
const SEEDS_IN_FLIGHT: usize = 256;

/// Seeds every customer's counters, `SEEDS_IN_FLIGHT` at a time; answers
/// the customers it could not seed, with why.
pub async fn seed_all<'c>(
    store: &dyn Store,
    counters: &'c HashMap<String, Counters>,
    mode: SeedMode,
) -> Vec<(&'c str, StoreError)> {
    let entries: Vec<(&'c String, &'c Counters)> = counters.iter().collect();
    let mut failed = Vec::new();
    for wave in entries.chunks(SEEDS_IN_FLIGHT) {
        // A plain loop, not a closure: the futures stay `Send` for a task.
        let mut seeds = Vec::with_capacity(wave.len());
        for (customer, c) in wave {
            seeds.push(store.seed(customer, **c, mode));
        }
        let results = futures::future::join_all(seeds).await;
        for ((customer, _), r) in wave.iter().zip(results) {
            if let Err(e) = r {
                failed.push((customer.as_str(), e));
            }
        }
    }
    failed
}

/// Claims again, in a store that may have lost them (a memory store after a
/// restart), the x402 payments the ledger says were used and whose
/// authorizations are still valid: a replay is refused after a restart too.
pub async fn seed_payment_claims(db: &Database, store: &dyn Store) -> Result<(), AppError> {
    let now = Utc::now();
    for claim in db.live_claims(now).await? {
        let secs = u64::try_from(claim.valid_before - now.timestamp()).unwrap_or(0) + 60;
        if let Err(e) = store.claim_payment(&claim.identity, secs * 1000).await {
            tracing::warn!(error = %e, "a used payment could not be claimed again in the store");
        }
    }
    Ok(())
}
