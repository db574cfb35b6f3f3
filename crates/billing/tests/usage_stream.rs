//! The usage stream against a real Redis: exactly once in the ledger even
//! when a consumer dies between commit and acknowledgement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::event;
use paygate_billing::stream::{stream_key, Ack, StreamConsumer, UsageStream, GROUP};
use paygate_billing::{BatchTarget, Database, Written};
use paygate_core::UsageEvent;
use paygate_metrics::Metrics;
use paygate_store::RedisConn;

fn url() -> String {
    std::env::var("PAYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

async fn db(dir: &tempfile::TempDir) -> Database {
    Database::connect(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await
        .unwrap()
}

async fn query<T: redis::FromRedisValue>(cmd: &mut redis::Cmd) -> T {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_commit_and_ack_is_replayed_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir).await;
    let prefix = format!("st-{}", uuid::Uuid::now_v7().simple());
    let stream = UsageStream::new(RedisConn::connect(&url()).unwrap(), &prefix);
    let events: Vec<UsageEvent> = (0..10).map(event).collect();
    assert_eq!(stream.write(&events).await.unwrap(), Written::Streamed(10));
    // A gateway retrying a batch it could not confirm sends some events twice.
    assert_eq!(
        stream.write(&events[..3]).await.unwrap(),
        Written::Streamed(3)
    );

    let dies = StreamConsumer::new(
        RedisConn::connect(&url()).unwrap(),
        &prefix,
        db.clone(),
        Metrics::new().unwrap(),
        Duration::from_secs(3600),
    );
    let r = dies
        .round(Ack::Skip, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(
        (r.read, r.inserted, r.acked),
        (13, 10, 0),
        "committed, then died before XACK"
    );
    let pending: (u64, Option<String>, Option<String>, redis::Value) =
        query(redis::cmd("XPENDING").arg(stream_key(&prefix)).arg(GROUP)).await;
    assert_eq!(pending.0, 13);

    // Another consumer takes the dead one's entries over once they are idle.
    let survivor = StreamConsumer::new(
        RedisConn::connect(&url()).unwrap(),
        &prefix,
        db.clone(),
        Metrics::new().unwrap(),
        Duration::ZERO,
    );
    let r = survivor
        .round(Ack::AfterCommit, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(
        (r.read, r.inserted, r.acked),
        (13, 0, 13),
        "replayed, nothing new, all acked"
    );
    assert_eq!(db.event_counts("c").await.unwrap().get(&true), Some(&10));
    let pending: (u64, Option<String>, Option<String>, redis::Value) =
        query(redis::cmd("XPENDING").arg(stream_key(&prefix)).arg(GROUP)).await;
    assert_eq!(pending.0, 0);
    let len: u64 = query(redis::cmd("XLEN").arg(stream_key(&prefix))).await;
    assert!(len <= 1, "acknowledged entries are trimmed, {len} left");
    let _: () = query(redis::cmd("DEL").arg(stream_key(&prefix))).await;
}
