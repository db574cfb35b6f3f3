//! How fast the ledger takes a burst of usage events, on the two paths a
//! production ledger is fed by:
//!
//! - `sqlite`: the embedded path. Events are emitted into the usage
//!   pipeline (the gateway's `UsageSink`) and the usage writer delivers them
//!   to a SQLite ledger in batches, as `paygate serve` does.
//! - `postgres`: the production path. Events wait in the Redis usage stream
//!   (written there first, not timed), then one stream consumer (`paygate
//!   billing run`) moves them into a Postgres ledger; timed from its start
//!   until the ledger holds them all.
//!
//! ```sh
//! cargo run --release -p paygate-app --example ledger_ingest -- sqlite 1000000
//! cargo run --release -p paygate-app --example ledger_ingest -- postgres 1000000
//! ```
//!
//! `PG` (default `postgres://postgres@127.0.0.1:5432`; a database of its own
//! is created and dropped) and `REDIS_URL` (default
//! `redis://127.0.0.1:6379/0`; a key prefix of its own, deleted at the end).
//! Events: 1,000 customers, 10 routes, one billing period, every one new.
//! `BATCH` sets the usage writer's batch size (`usage.batch_size`, 512).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use paygate_billing::Database;
use paygate_core::UsageEvent;
use paygate_metrics::Metrics;
use paygate_store::usage_stream::{StreamConsumer, UsageStream};
use paygate_store::RedisConn;
use paygate_usage::{pipeline, BatchTarget, Batching};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn events(n: usize) -> impl Iterator<Item = UsageEvent> {
    let now = Utc::now();
    let period = now.format("%Y-%m").to_string();
    (0..n).map(move |i| UsageEvent {
        request_id: uuid::Uuid::now_v7().to_string(),
        ts: now,
        customer_id: format!("c{:04}", i % 1000),
        key_id: format!("k{:04}", i % 1000),
        plan_id: "bench".into(),
        route: format!("r{}", i % 10),
        method: "GET".into(),
        status: 200,
        billable: true,
        units: 1,
        overage_units: 0,
        amount_micros: 17_000,
        credits_micros: 17_000,
        period: period.clone(),
        latency_us: 900,
        payment: None,
    })
}

async fn count(db: &Database) -> Result<i64> {
    Ok(i64::try_from(db.events_held().await?)?)
}

fn report(path: &str, n: usize, took: Duration) {
    println!(
        "{path}: {n} events in {:.2} s = {:.0} events/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

async fn sqlite(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::connect(&format!(
        "sqlite://{}",
        dir.path().join("ledger.db").display()
    ))
    .await?;
    db.migrate().await?;
    let defaults = paygate_config::Config::default().usage;
    let batch_size = match std::env::var("BATCH") {
        Ok(v) => v.parse()?,
        Err(_) => defaults.batch_size,
    };
    let batching = Batching {
        buffer: defaults.buffer,
        batch_size,
        flush_interval: Duration::from_millis(defaults.flush_interval_ms),
    };
    let (sink, writer) = pipeline(Arc::new(db.clone()), Metrics::new()?, batching);
    let start = Instant::now();
    let writing = tokio::spawn(writer.run());
    for e in events(n) {
        sink.emit(e).await;
    }
    drop(sink);
    writing.await?;
    let took = start.elapsed();
    let held = count(&db).await?;
    if held != n as i64 {
        return Err(format!("the ledger holds {held} events, not {n}").into());
    }
    report("sqlite, through the usage writer", n, took);
    Ok(())
}

async fn postgres(n: usize) -> Result<()> {
    let pg = std::env::var("PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let name = format!("paygate_ingest_{}", std::process::id());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&format!("{pg}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    let result = async {
        let db = Database::connect(&format!("{pg}/{name}")).await?;
        db.migrate().await?;
        let prefix = format!("ingest{}", std::process::id());
        let stream = UsageStream::new(RedisConn::connect(redis.as_str())?, &prefix);
        let all: Vec<UsageEvent> = events(n).collect();
        for chunk in all.chunks(2048) {
            stream
                .write(chunk)
                .await
                .map_err(|e| format!("XADD: {e}"))?;
        }
        drop(all);
        let consumer = StreamConsumer::new(
            RedisConn::connect(redis.as_str())?,
            &prefix,
            Arc::new(db.clone()),
            Metrics::new()?,
            Duration::from_secs(30),
        );
        let start = Instant::now();
        let consuming = tokio::spawn(consumer.run());
        loop {
            if count(&db).await? >= n as i64 {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                return Err("not done after 600 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = start.elapsed();
        consuming.abort();
        report("postgres, through the Redis stream consumer", n, took);
        let conn = RedisConn::connect(redis.as_str())?;
        conn.query::<()>(redis::cmd("DEL").arg(paygate_store::usage_stream::stream_key(&prefix)))
            .await?;
        drop(db);
        Ok(())
    }
    .await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    result
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    match args.first().map(String::as_str) {
        Some("sqlite") => sqlite(n).await,
        Some("postgres") => postgres(n).await,
        _ => Err("usage: ledger_ingest <sqlite|postgres> [EVENTS]".into()),
    }
}
