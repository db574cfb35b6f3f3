//! The usage stream against a real Redis: exactly once in the ledger even
//! when a consumer dies between commit and acknowledgement; batches Redis
//! or the ledger refuse for good are dead-lettered, neither blocking the
//! pipeline nor lost, and can be replayed once the cause is fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use paygate_billing::Database;
use paygate_core::UsageEvent;
use paygate_metrics::Metrics;
use paygate_store::usage_stream::{
    is_transient, stream_key, Ack, StreamConsumer, UsageStream, GROUP,
};
use paygate_store::{RedisConn, StoreError};
use paygate_testkit::{usage_event as event, DbKind, TestDb};
use paygate_usage::{pipeline, BatchTarget, Batching, DeadLetterFile, DeliveryError, Written};

fn url() -> String {
    std::env::var("PAYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

async fn sqlite(dir: &tempfile::TempDir) -> Database {
    Database::connect(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await
        .unwrap()
}

async fn query<T: redis::FromRedisValue>(cmd: &mut redis::Cmd) -> T {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

fn prefix() -> String {
    format!("st-{}", uuid::Uuid::now_v7().simple())
}

fn consumer(prefix: &str, ledger: &Database, claim_idle: Duration) -> StreamConsumer {
    StreamConsumer::new(
        RedisConn::connect(&url()).unwrap(),
        prefix,
        Arc::new(ledger.clone()),
        Metrics::new().unwrap(),
        claim_idle,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_commit_and_ack_is_replayed_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir).await;
    let prefix = prefix();
    let stream = UsageStream::new(RedisConn::connect(&url()).unwrap(), &prefix);
    let events: Vec<UsageEvent> = (0..10).map(event).collect();
    assert_eq!(stream.write(&events).await.unwrap(), Written::Streamed(10));
    // A gateway retrying a batch it could not confirm sends some events twice.
    assert_eq!(
        stream.write(&events[..3]).await.unwrap(),
        Written::Streamed(3)
    );

    let dies = consumer(&prefix, &db, Duration::from_secs(3600));
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
    let survivor = consumer(&prefix, &db, Duration::ZERO);
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

/// The error Redis answers for `cmd`, through the store's connection.
async fn redis_error(conn: &RedisConn, cmd: &redis::Cmd) -> redis::RedisError {
    match conn.query::<redis::Value>(cmd).await {
        Err(StoreError::Redis(e)) => e,
        other => panic!("expected a Redis error, got {other:?}"),
    }
}

#[tokio::test]
async fn redis_errors_are_classified_by_code() {
    let conn = RedisConn::connect(&url()).unwrap();
    let key = format!("{}:string", prefix());
    let _: () = query(redis::cmd("SET").arg(&key).arg("v")).await;
    // A key of the wrong type: refused now and for ever.
    let wrong_type = redis_error(
        &conn,
        redis::cmd("XADD").arg(&key).arg("*").arg("e").arg("1"),
    )
    .await;
    assert_eq!(wrong_type.code(), Some("WRONGTYPE"));
    assert!(!is_transient(&wrong_type));
    // A consumer group that exists already.
    let _: () = query(
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(format!("{key}:s"))
            .arg("g")
            .arg("0")
            .arg("MKSTREAM"),
    )
    .await;
    let busy = redis_error(
        &conn,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(format!("{key}:s"))
            .arg("g")
            .arg("0"),
    )
    .await;
    assert_eq!(busy.code(), Some("BUSYGROUP"));
    // Nobody listening: the connection fails, which passes.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = RedisConn::connect(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    let refused = redis_error(&down, &redis::cmd("PING")).await;
    assert!(is_transient(&refused), "{refused:?}");
    let _: () = query(redis::cmd("DEL").arg(&key).arg(format!("{key}:s"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_redis_refuses_for_good_is_dead_lettered_and_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    // An operator's mistake: the stream's key holds a string.
    let _: () = query(redis::cmd("SET").arg(stream_key(&prefix)).arg("oops")).await;
    let stream = UsageStream::new(RedisConn::connect(&url()).unwrap(), &prefix);
    assert!(matches!(
        stream.write(&[event(0)]).await,
        Err(DeliveryError::Permanent(_))
    ));

    // No spill file: before dead letters, a refused batch was retried for
    // ever and the full buffer then blocked the gateway.
    let metrics = Metrics::new().unwrap();
    let letters = DeadLetterFile::new(dir.path().join("dead.jsonl"));
    let batching = Batching {
        buffer: 4,
        batch_size: 4,
        flush_interval: Duration::from_millis(5),
    };
    let (sink, writer) = pipeline(Arc::new(stream), metrics.clone(), batching);
    let writer = tokio::spawn(
        writer
            .with_dead_letters(DeadLetterFile::new(letters.path()))
            .run(),
    );
    for i in 0..20 {
        // More than the buffer holds: this would hang if nothing moved.
        tokio::time::timeout(Duration::from_secs(10), sink.emit(event(i)))
            .await
            .expect("the gateway is not blocked");
    }
    drop(sink);
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
    let kept = letters.read_all().await.unwrap();
    assert_eq!(kept.len(), 20);
    assert!(
        kept.iter().all(|l| l.reason.contains("WRONGTYPE")),
        "{:?}",
        kept[0]
    );
    assert_eq!(
        metrics
            .usage_events
            .with_label_values(&["dead_lettered"])
            .get(),
        20
    );
    assert_eq!(metrics.usage_backlog.get(), 0);

    // Fixed: the events reach the ledger, each once.
    let _: () = query(redis::cmd("DEL").arg(stream_key(&prefix))).await;
    let db = sqlite(&dir).await;
    let replayed = letters.replay(&db, 8).await.unwrap();
    assert_eq!((replayed.delivered, replayed.kept), (20, 0));
    assert_eq!(db.event_counts("c").await.unwrap().get(&true), Some(&20));
    assert!(letters.read_all().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_the_ledger_refuses_for_good_are_dead_lettered_and_the_rest_land() {
    // Postgres refuses text holding a NUL byte (SQLSTATE 22021), for ever.
    let pg = TestDb::new(DbKind::Postgres);
    let db = Database::connect(&pg.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let stream = UsageStream::new(RedisConn::connect(&url()).unwrap(), &prefix);
    let mut events: Vec<UsageEvent> = (0..10).map(event).collect();
    events[3].method = "GE\0T".into();
    events[7].route = "r\0".into();
    stream.write(&events).await.unwrap();
    // An entry that is not a usage event at all.
    let _: () = query(
        redis::cmd("XADD")
            .arg(stream_key(&prefix))
            .arg("*")
            .arg("e")
            .arg("{not json"),
    )
    .await;

    let letters = DeadLetterFile::new(dir.path().join("dead.jsonl"));
    let c = consumer(&prefix, &db, Duration::from_secs(3600))
        .with_dead_letters(DeadLetterFile::new(letters.path()));
    let r = c
        .round(Ack::AfterCommit, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(
        (r.read, r.inserted, r.acked, r.dead_lettered),
        (11, 8, 11, 3)
    );
    assert_eq!(db.event_counts("c").await.unwrap().get(&true), Some(&8));
    let kept = letters.read_all().await.unwrap();
    let ids: Vec<_> = kept
        .iter()
        .filter_map(|l| l.event.as_ref().map(|e| e.request_id.clone()))
        .collect();
    assert_eq!(ids, ["req-3", "req-7"]);
    assert!(kept.iter().any(|l| l.raw.as_deref() == Some("{not json")));
    // Nothing is left pending: the stream is not stuck behind them.
    let pending: (u64, Option<String>, Option<String>, redis::Value) =
        query(redis::cmd("XPENDING").arg(stream_key(&prefix)).arg(GROUP)).await;
    assert_eq!(pending.0, 0);

    // A replay while the cause stays: the refused events stay in the file.
    let replayed = letters.replay(&db, 8).await.unwrap();
    assert_eq!((replayed.delivered, replayed.kept), (0, 3));
    assert_eq!(letters.read_all().await.unwrap().len(), 3);
    let _: () = query(redis::cmd("DEL").arg(stream_key(&prefix))).await;
}
