//! Record changes between processes: the admin API that changed a plan,
//! customer or key publishes its id on a Redis channel; every gateway
//! subscribed to it reloads that record into its catalog. With the memory
//! store there is one process and nothing to publish.

use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;

use crate::redis_store::{RedisEndpoint, RedisTarget};
use crate::{Catalog, Counters, CustomerRecord, SeedMode, Store, StoreError};

/// What changed; the receiver reloads it from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    Plan(String),
    Customer(String),
    Key(String),
}

impl RecordChange {
    fn encode(&self) -> String {
        match self {
            Self::Plan(id) => format!("plan:{id}"),
            Self::Customer(id) => format!("customer:{id}"),
            Self::Key(id) => format!("key:{id}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (kind, id) = s.split_once(':')?;
        let id = id.to_string();
        match kind {
            "plan" => Some(Self::Plan(id)),
            "customer" => Some(Self::Customer(id)),
            "key" => Some(Self::Key(id)),
            _ => None,
        }
    }
}

/// Publishing side, held by the admin API.
#[derive(Clone)]
pub enum ChangeBus {
    /// One process: its catalog is already up to date.
    Local,
    Redis {
        conn: redis::aio::ConnectionManager,
        channel: String,
    },
}

/// A customer record the database now holds goes into this process's
/// catalog and to the other processes.
pub async fn customer_stored(catalog: &Catalog, bus: &ChangeBus, rec: &CustomerRecord) {
    catalog.put_customer(rec.clone());
    bus.publish(RecordChange::Customer(rec.id.to_string()))
        .await;
}

/// A customer just created: stored as above, and its counters start from
/// zero in the store. A store that is down now seeds them from the ledger
/// on the customer's first call instead.
pub async fn customer_created(
    catalog: &Catalog,
    bus: &ChangeBus,
    store: &dyn Store,
    rec: &CustomerRecord,
) {
    customer_stored(catalog, bus, rec).await;
    let counters = Counters {
        credits_micros: 0,
        quota_used: 0,
        period_start: paygate_core::period::Period::containing(rec.anchor_day, rec.created_at)
            .start
            .timestamp(),
    };
    if let Err(e) = store
        .seed(rec.id.as_str(), counters, SeedMode::IfAbsent)
        .await
    {
        tracing::warn!(customer = %rec.id, error = %e, "counters of a new customer not stored yet");
    }
}

/// The node pub/sub goes through: the server itself, or the first seed node
/// of a cluster (Redis Cluster forwards PUBLISH to every node).
fn pubsub_client(endpoint: &RedisEndpoint) -> Result<redis::Client, StoreError> {
    let node = match endpoint.target()? {
        RedisTarget::Single(u) => u,
        RedisTarget::Cluster(nodes) => nodes.into_iter().next().unwrap_or_default(),
    };
    endpoint.client(&node)
}

pub fn channel(prefix: &str) -> String {
    format!("{prefix}:records")
}

impl ChangeBus {
    pub fn redis(endpoint: &RedisEndpoint, prefix: &str) -> Result<Self, StoreError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)));
        let conn =
            redis::aio::ConnectionManager::new_lazy_with_config(pubsub_client(endpoint)?, config)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self::Redis {
            conn,
            channel: channel(prefix),
        })
    }

    /// Best effort: a gateway that misses a message reloads everything when
    /// its subscription reconnects.
    pub async fn publish(&self, change: RecordChange) {
        let Self::Redis { conn, channel } = self else {
            return;
        };
        let sent: Result<i64, _> = tokio::time::timeout(
            Duration::from_secs(1),
            conn.clone().publish(channel.as_str(), change.encode()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "publish timed out",
            )))
        });
        if let Err(e) = sent {
            tracing::warn!(error = %e, change = ?change, "record change not published");
        }
    }
}

/// Subscribes to record changes and calls `apply` for each; calls `resync`
/// after every (re)connection, since messages sent while disconnected are
/// lost. The first subscription is announced on `first`; when the receiver
/// takes it (it loads the catalog after that), no resync follows it.
pub async fn follow<A, R, FA, FR>(
    endpoint: RedisEndpoint,
    prefix: String,
    apply: A,
    resync: R,
    mut first: Option<tokio::sync::oneshot::Sender<()>>,
) where
    A: Fn(RecordChange) -> FA,
    FA: std::future::Future<Output = ()>,
    R: Fn() -> FR,
    FR: std::future::Future<Output = ()>,
{
    let channel = channel(&prefix);
    let mut delay = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let client = pubsub_client(&endpoint)?;
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            pubsub
                .subscribe(channel.as_str())
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok::<_, StoreError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                delay = Duration::from_millis(100);
                // A process that loads its catalog only once told of the
                // first subscription misses no change: no reload then (with
                // a million keys, a reload holds up the changes behind it
                // for a second).
                let told = first.take().is_some_and(|tx| tx.send(()).is_ok());
                if !told {
                    resync().await;
                }
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(change) = RecordChange::decode(&payload) {
                        apply(change).await;
                    }
                }
                tracing::warn!("record change subscription lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "record change subscription failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
