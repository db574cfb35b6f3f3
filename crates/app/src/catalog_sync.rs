//! Keeps this process's catalog (plans, customers, keys) and store counters
//! in step with the database, which is the truth.

use std::sync::Arc;
use std::time::Duration;

use paygate_billing::{Database, DbError};
use paygate_config::{Config, StoreBackend};
use paygate_core::records::CustomerRecord;
use paygate_core::Plan;
use paygate_store::{changes, Catalog, ChangeBus, KeyIndex, RecordChange, Store};

use crate::AppError;

/// Every record the catalog holds, read from the database.
async fn read_catalog(
    db: &Database,
) -> Result<(Vec<Plan>, Vec<CustomerRecord>, KeyIndex), DbError> {
    let (plans, customers) = db.load_plans_and_customers().await?;
    let mut keys = KeyIndex::default();
    db.for_each_key(|k| keys.add(k)).await?;
    Ok((plans, customers, keys))
}

/// Loads every record into `catalog`.
pub async fn load(db: &Database, catalog: &Catalog) -> Result<(), AppError> {
    let (plans, customers, keys) = read_catalog(db).await?;
    catalog.replace_all(plans, customers, keys);
    Ok(())
}

/// How long the start waits for the change subscription before it loads the
/// catalog anyway (Redis down: the subscription reloads it once it is up).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// Subscribes this process to other processes' record changes (Redis mode),
/// then loads every record into `catalog`, and returns the bus on which this
/// process publishes its own changes. Subscribing first means no change made
/// during the load is missed, without a second load after it.
pub async fn load_and_follow(
    config: &Config,
    db: &Database,
    catalog: &Arc<Catalog>,
) -> Result<ChangeBus, AppError> {
    let bus = match config.store.backend {
        StoreBackend::Memory => ChangeBus::Local,
        StoreBackend::Redis => {
            let endpoint = crate::store::endpoint(config)?;
            let (follower, prefix) = (endpoint.clone(), config.store.key_prefix.clone());
            let (db, follower_catalog) = (db.clone(), Arc::clone(catalog));
            let (subscribed, first) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let apply = |change| apply_change(&db, &follower_catalog, change);
                let resync = || resync(&db, &follower_catalog);
                changes::follow(follower, prefix, apply, resync, Some(subscribed)).await;
            });
            // Timed out (Redis down): load now; the subscription, once made,
            // reloads (the sender then finds nobody listening).
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, first).await;
            ChangeBus::redis(&endpoint, &config.store.key_prefix)?
        }
    };
    load(db, catalog).await?;
    Ok(bus)
}

/// Loads quota used and credits from the ledger into the store, so a
/// restart gives nobody a fresh quota. `IfAbsent`: with a shared store the
/// live counters of the other gateways are ahead of the ledger. A customer
/// not seeded now is seeded by the reseeding of its first call.
pub async fn seed_counters(
    db: &Database,
    catalog: &Catalog,
    store: &dyn Store,
) -> Result<(), AppError> {
    crate::store::rebuild(db, store, &catalog.customers()).await?;
    Ok(())
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
        match read_catalog(db).await {
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
