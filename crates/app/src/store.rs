//! The configured store, and the worker that rebuilds counters the store
//! lost from the ledger.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use paygate_billing::Database;
use paygate_config::{Config, StoreBackend};
use paygate_store::{
    Catalog, MemoryStore, RedisEndpoint, RedisStore, ReseedOnMiss, SeedMode, Store,
};
use tokio::sync::mpsc;

use crate::AppError;

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

/// Customer ids whose counters the store asks to be rebuilt.
pub type ReseedRequests = mpsc::Receiver<String>;

/// The configured store; for Redis also the channel on which it asks for
/// customers' counters to be rebuilt from the ledger (see [`reseed`]).
pub fn build(config: &Config) -> Result<(Arc<dyn Store>, Option<ReseedRequests>), AppError> {
    match config.store.backend {
        StoreBackend::Memory => Ok((Arc::new(MemoryStore::new()), None)),
        StoreBackend::Redis => {
            let redis = RedisStore::connect(
                endpoint(config)?,
                &config.store.key_prefix,
                Duration::from_millis(config.store.timeout_ms),
            )?;
            let (tx, rx) = mpsc::channel(1024);
            Ok((Arc::new(ReseedOnMiss::new(redis, tx)), Some(rx)))
        }
    }
}

/// Rebuilds, from the ledger, the counters of customers the store has lost
/// (a Redis restarted without persistence) or never had. Requests that
/// arrive while a round runs are merged into the next one.
pub async fn reseed(
    db: Database,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    mut requests: ReseedRequests,
) {
    let mut pending = BTreeSet::new();
    while let Some(first) = requests.recv().await {
        pending.insert(first);
        while let Ok(more) = requests.try_recv() {
            pending.insert(more);
        }
        for id in std::mem::take(&mut pending) {
            let Some(customer) = catalog.customer(&id) else {
                continue;
            };
            let seeded = match db.counters(&customer, Utc::now()).await {
                Ok(c) => store
                    .seed(&id, c, SeedMode::IfAbsent)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match seeded {
                Ok(true) => tracing::info!(customer = %id, "counters rebuilt from the ledger"),
                Ok(false) => {}
                Err(e) => tracing::warn!(customer = %id, error = %e, "counters not rebuilt"),
            }
        }
    }
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
