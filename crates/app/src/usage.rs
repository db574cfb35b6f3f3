//! The usage pipeline of this process: where its usage writer delivers,
//! and the stream consumer that fills the ledger in Redis mode.

use std::sync::Arc;
use std::time::Duration;

use paygate_billing::Database;
use paygate_config::{Config, StoreBackend};
use paygate_metrics::Metrics;
use paygate_store::usage_stream::{StreamConsumer, UsageStream};
use paygate_store::RedisConn;
use paygate_usage::{pipeline, BatchTarget, Batching, DeadLetterFile, SpillFile, UsageSink};

use crate::AppError;

/// Starts the usage writer of a proxying process and returns the sink calls
/// emit into. Embedded: events go straight into the ledger. Redis: into the
/// usage stream, which the billing consumer moves into the ledger.
pub fn start_writer(
    config: &Config,
    db: &Database,
    metrics: &Metrics,
) -> Result<UsageSink, AppError> {
    let target: Arc<dyn BatchTarget> = match config.store.backend {
        StoreBackend::Memory => Arc::new(db.clone()),
        StoreBackend::Redis => {
            let conn = RedisConn::connect(crate::store::endpoint(config)?)?;
            Arc::new(UsageStream::new(conn, &config.store.key_prefix))
        }
    };
    let u = &config.usage;
    let batching = Batching {
        buffer: u.buffer,
        batch_size: u.batch_size,
        flush_interval: Duration::from_millis(u.flush_interval_ms),
    };
    let (sink, writer) = pipeline(target, metrics.clone(), batching);
    let writer = writer.with_dead_letters(DeadLetterFile::new(&u.dead_letter_path));
    let writer = match &u.spill_path {
        Some(path) => writer.with_spill(SpillFile::new(path)),
        None => writer,
    };
    tokio::spawn(writer.run());
    Ok(sink)
}

/// The usage-stream consumer that fills the ledger in Redis mode.
pub fn consumer(
    config: &Config,
    db: Database,
    metrics: Metrics,
) -> Result<StreamConsumer, AppError> {
    let conn = RedisConn::connect(crate::store::endpoint(config)?)?;
    Ok(StreamConsumer::new(
        conn,
        &config.store.key_prefix,
        Arc::new(db),
        metrics,
        Duration::from_millis(config.usage.claim_idle_ms),
    )
    .with_dead_letters(DeadLetterFile::new(&config.usage.dead_letter_path)))
}
