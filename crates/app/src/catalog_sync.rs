//! Keeps this process's catalog (plans, customers, keys) and store counters
//! in step with the database, which is the truth.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use paygate_core::metering::Counters;

use chrono::Utc;
use paygate_billing::{Database, DbError};
use paygate_config::{Config, StoreBackend};
use paygate_store::{changes, Catalog, ChangeBus, RecordChange, SeedMode, Store};

use crate::AppError;

/// Loads every record into `catalog`.
pub async fn load(db: &Database, catalog: &Catalog) -> Result<(), AppError> {
    let (plans, customers, keys) = db.load_catalog().await?;
    catalog.replace_all(plans, customers, keys);
    Ok(())
}

/// Subscribes this process to other processes' record changes (Redis mode)
/// and returns the bus on which this process publishes its own.
pub fn follow(
    config: &Config,
    db: &Database,
    catalog: &Arc<Catalog>,
) -> Result<ChangeBus, AppError> {
    match config.store.backend {
        StoreBackend::Memory => Ok(ChangeBus::Local),
        StoreBackend::Redis => {
            let endpoint = crate::store::endpoint(config)?;
            let (follower, prefix) = (endpoint.clone(), config.store.key_prefix.clone());
            let (db, catalog) = (db.clone(), Arc::clone(catalog));
            tokio::spawn(async move {
                let apply = |change| apply_change(&db, &catalog, change);
                let resync = || resync(&db, &catalog);
                changes::follow(follower, prefix, apply, resync).await;
            });
            Ok(ChangeBus::redis(&endpoint, &config.store.key_prefix)?)
        }
    }
}

/// Loads quota used and credits from the ledger into the store, so a
/// restart gives nobody a fresh quota. `IfAbsent`: with a shared store the
/// live counters of the other gateways are ahead of the ledger.
pub async fn seed_counters(
    db: &Database,
    catalog: &Catalog,
    store: &dyn Store,
) -> Result<(), AppError> {
    let customers = catalog.customers();
    let counters = db.counters_of(&customers, Utc::now()).await?;
    seed_all(store, counters, SeedMode::IfAbsent).await;
    Ok(())
}

/// Store calls in flight at once while seeding: Redis pipelines them on
/// one connection, so 100,000 customers take seconds, not minutes.
const SEEDS_IN_FLIGHT: usize = 256;

/// Seeds every customer's counters; a failure is logged and left to the
/// reseeding of that customer's first call.
pub async fn seed_all(store: &dyn Store, counters: HashMap<String, Counters>, mode: SeedMode) {
    stream::iter(counters)
        .for_each_concurrent(SEEDS_IN_FLIGHT, |(customer, c)| async move {
            if let Err(e) = store.seed(&customer, c, mode).await {
                tracing::warn!(customer = %customer, error = %e, "counters not loaded into the store yet");
            }
        })
        .await;
}

/// Reloads one changed record from the database into the catalog.
async fn apply_change(db: &Database, catalog: &Catalog, change: RecordChange) {
    if let Err(e) = reload(db, catalog, &change).await {
        tracing::warn!(?change, error = %e, "record change not applied");
    }
}

async fn reload(db: &Database, catalog: &Catalog, change: &RecordChange) -> Result<(), DbError> {
    match change {
        RecordChange::Plan(id) => match db.get_plan(id).await {
            Ok(p) => catalog.put_plan(p),
            Err(DbError::NotFound) => catalog.remove_plan(id),
            Err(e) => return Err(e),
        },
        RecordChange::Customer(id) => catalog.put_customer(db.get_customer(id).await?),
        RecordChange::Key(id) => match db.get_key(id).await {
            Ok((k, false)) => catalog.put_key(k),
            Ok((k, true)) => catalog.revoke_key(id, &k.prefix),
            Err(DbError::NotFound) => catalog.forget_key(id),
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

/// Loads the whole catalog again (after a missed change).
async fn resync(db: &Database, catalog: &Catalog) {
    // An admin change applied while the records were being read would be
    // undone by them: read again until no change slipped in between.
    for _ in 0..10 {
        let edits = catalog.edits();
        match db.load_catalog().await {
            Ok((plans, customers, keys)) => {
                if catalog.replace_all_unless_edited(edits, plans, customers, keys) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "catalog not reloaded");
                return;
            }
        }
    }
    tracing::warn!("catalog not reloaded: records kept changing while it was read");
}
