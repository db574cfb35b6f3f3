//! Usage events through a Redis Stream (production mode).
//!
//! Gateways `XADD` events in batches (one pipelined round trip per batch) to
//! `{<prefix>:usage}`: [`UsageStream`] is their usage writer's target. The
//! billing consumer ([`StreamConsumer`]) reads them with a consumer group
//! (`XREADGROUP`), hands them to the ledger (any [`BatchTarget`]: the
//! consumer knows no database), and acknowledges (`XACK`) only after the
//! ledger took them. Entries left pending by a dead consumer are taken over
//! with `XAUTOCLAIM`. Only acknowledged entries are trimmed. In transit an
//! event is at least once; in the ledger it is exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use paygate_core::UsageEvent;
use paygate_metrics::Metrics;
use paygate_usage::{
    keep_dead_letters, send_isolating, BatchTarget, DeadLetter, DeadLetterFile, DeliveryError,
    Sent, Written,
};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::RedisError;

use crate::{RedisConn, StoreError};

pub const GROUP: &str = "billing";
const FIELD: &str = "e";

pub fn stream_key(prefix: &str) -> String {
    format!("{{{prefix}:usage}}")
}

/// Redis error codes that name a passing condition: a server still loading
/// its data, a cluster resharding or failing over, a busy script, memory
/// that may be freed. Everything else Redis refuses (a key of the wrong
/// type, a missing permission) will be refused again.
const TRANSIENT_CODES: [&str; 9] = [
    "LOADING",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "MOVED",
    "ASK",
    "BUSY",
    "OOM",
];

/// Whether retrying what failed may succeed.
pub fn is_transient(e: &RedisError) -> bool {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    match e.code() {
        Some(code) => TRANSIENT_CODES.contains(&code),
        // No server code: a client-side failure. The connection layer's own
        // failures (no connection to a cluster node yet) pass.
        None => matches!(
            e.kind(),
            redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::Io
                | redis::ErrorKind::Parse
        ),
    }
}

fn delivery_error(e: StoreError) -> DeliveryError {
    match e {
        StoreError::Redis(r) if !is_transient(&r) => DeliveryError::permanent(r),
        other => DeliveryError::transient(other),
    }
}

/// The gateway's side: where the usage writer sends batches.
pub struct UsageStream {
    conn: RedisConn,
    key: String,
    /// After a failure, fail at once until then: a dead Redis must not make
    /// every batch wait out a reconnect before it can be spilled.
    down_until: parking_lot::Mutex<Option<Instant>>,
}

const COOL_DOWN: Duration = Duration::from_millis(500);
const XADD_DEADLINE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("usage stream unreachable (cooling down after a failure)")]
    CoolingDown,
    #[error("usage stream: {0} timed out")]
    Timeout(&'static str),
    #[error("usage event not encodable: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("usage stream: {0}")]
    Store(#[from] StoreError),
    /// The ledger did not take what was read (the entries stay pending).
    #[error("ledger: {0}")]
    Ledger(DeliveryError),
}

impl UsageStream {
    pub fn new(conn: RedisConn, prefix: &str) -> Self {
        Self {
            conn,
            key: stream_key(prefix),
            down_until: parking_lot::Mutex::new(None),
        }
    }
}

#[async_trait]
impl BatchTarget for UsageStream {
    async fn write(&self, batch: &[UsageEvent]) -> Result<Written, DeliveryError> {
        if self.down_until.lock().is_some_and(|t| Instant::now() < t) {
            return Err(DeliveryError::transient(StreamError::CoolingDown));
        }
        let mut pipe = redis::pipe();
        for e in batch {
            let json = serde_json::to_string(e)
                .map_err(|e| DeliveryError::permanent(StreamError::Encode(e)))?;
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg(FIELD)
                .arg(json)
                .ignore();
        }
        let sent = tokio::time::timeout(XADD_DEADLINE, self.conn.pipeline::<()>(&pipe)).await;
        let result = match sent {
            Ok(Ok(())) => Ok(Written::Streamed(batch.len() as u64)),
            Ok(Err(e)) => Err(delivery_error(e)),
            Err(_) => Err(DeliveryError::transient(StreamError::Timeout("XADD"))),
        };
        // Cool down only for an unreachable Redis: a refused batch says
        // nothing about the next one.
        let unreachable = matches!(&result, Err(e) if e.is_transient());
        *self.down_until.lock() = unreachable.then(|| Instant::now() + COOL_DOWN);
        result
    }
}

/// The billing side: stream → ledger.
pub struct StreamConsumer {
    /// A connection of its own: `XREADGROUP … BLOCK` would hold up other
    /// commands on a shared multiplexed connection.
    conn: RedisConn,
    key: String,
    name: String,
    ledger: Arc<dyn BatchTarget>,
    dead_letters: Option<DeadLetterFile>,
    metrics: Metrics,
    batch: usize,
    claim_idle: Duration,
    /// The group exists (checked once, again after Redis answers NOGROUP).
    group_ready: AtomicBool,
    /// Trimming is housekeeping: at most once per `TRIM_EVERY`.
    last_trim: parking_lot::Mutex<Option<Instant>>,
}

const TRIM_EVERY: Duration = Duration::from_secs(1);

/// What one round of processing did, for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub read: usize,
    pub inserted: u64,
    pub acked: usize,
    /// Entries the ledger refused for good (or that were unreadable), kept
    /// in the dead-letter file and acknowledged.
    pub dead_lettered: usize,
}

/// Whether to acknowledge what was committed (tests simulate a crash between
/// commit and ack with `Skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    AfterCommit,
    Skip,
}

impl StreamConsumer {
    pub fn new(
        conn: RedisConn,
        prefix: &str,
        ledger: Arc<dyn BatchTarget>,
        metrics: Metrics,
        claim_idle: Duration,
    ) -> Self {
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        Self {
            conn,
            key: stream_key(prefix),
            name,
            ledger,
            dead_letters: None,
            metrics,
            // Entries per read and per ledger transaction: at 512 the
            // consumer took 36,000 events/s into Postgres, at 2048 54,000
            // (`ledger_ingest` example).
            batch: 2048,
            claim_idle,
            group_ready: AtomicBool::new(false),
            last_trim: parking_lot::Mutex::new(None),
        }
    }

    /// Where entries the ledger refuses for good go; without a file they are
    /// written to the log (and acknowledged all the same, so that one bad
    /// entry cannot stop the stream).
    pub fn with_dead_letters(mut self, file: DeadLetterFile) -> Self {
        self.dead_letters = Some(file);
        self
    }

    /// Consumes forever, surviving Redis and database outages.
    pub async fn run(self) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self
                .round(Ack::AfterCommit, Duration::from_millis(500))
                .await
            {
                Ok(_) => delay = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "usage consumer: retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn ensure_group(&self) -> Result<(), StreamError> {
        if self.group_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.conn.query::<()>(&cmd).await {
            Err(StoreError::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        self.group_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Takes over entries idle longer than `claim_idle` (a dead consumer's),
    /// then reads new ones, blocking up to `block`.
    pub async fn round(&self, ack: Ack, block: Duration) -> Result<Round, StreamError> {
        let r = self.round_inner(ack, block).await;
        // A Redis that lost its data has no group any more: create it again.
        if let Err(StreamError::Store(StoreError::Redis(e))) = &r {
            if e.code() == Some("NOGROUP") {
                self.group_ready.store(false, Ordering::Relaxed);
            }
        }
        r
    }

    async fn round_inner(&self, ack: Ack, block: Duration) -> Result<Round, StreamError> {
        self.ensure_group().await?;
        let mut claim = redis::cmd("XAUTOCLAIM");
        claim
            .arg(&self.key)
            .arg(GROUP)
            .arg(&self.name)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.batch);
        let claimed: StreamAutoClaimReply = self.conn.query(&claim).await?;
        let mut round = self.process(claimed.claimed, ack).await?;

        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.batch)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">");
        let reply: Option<StreamReadReply> = self.conn.query(&read).await?;
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        let fresh = self.process(entries, ack).await?;
        round.read += fresh.read;
        round.inserted += fresh.inserted;
        round.acked += fresh.acked;
        round.dead_lettered += fresh.dead_lettered;
        Ok(round)
    }

    async fn process(&self, entries: Vec<StreamId>, ack: Ack) -> Result<Round, StreamError> {
        if entries.is_empty() {
            return Ok(Round::default());
        }
        let mut events = Vec::with_capacity(entries.len());
        let mut letters = Vec::new();
        for entry in &entries {
            let raw = entry.get::<String>(FIELD);
            match raw.as_deref().map(serde_json::from_str::<UsageEvent>) {
                Some(Ok(e)) => events.push(e),
                Some(Err(e)) => letters.push(DeadLetter::raw(
                    raw.unwrap_or_default(),
                    format!("stream entry {} unreadable: {e}", entry.id),
                )),
                None => letters.push(DeadLetter::raw(
                    format!("{:?}", entry.map),
                    format!("stream entry {} has no field {FIELD:?}", entry.id),
                )),
            }
        }
        let inserted = self.deliver(&events, &mut letters).await?;
        let mut round = Round {
            read: entries.len(),
            inserted,
            acked: 0,
            dead_lettered: letters.len(),
        };
        keep_dead_letters(self.dead_letters.as_ref(), &letters, &self.metrics).await;
        if ack == Ack::Skip {
            return Ok(round);
        }
        let mut xack = redis::cmd("XACK");
        xack.arg(&self.key).arg(GROUP);
        for e in &entries {
            xack.arg(&e.id);
        }
        round.acked = self.conn.query(&xack).await?;
        self.trim().await;
        Ok(round)
    }

    /// Hands `events` to the ledger; events it refuses for good join
    /// `letters`. An unavailable ledger fails the round: nothing is
    /// acknowledged and the entries are read again (what did land is
    /// deduplicated by the ledger).
    async fn deliver(
        &self,
        events: &[UsageEvent],
        letters: &mut Vec<DeadLetter>,
    ) -> Result<u64, StreamError> {
        let mut inserted = 0;
        let m = &self.metrics.usage_events;
        let sent = send_isolating(
            self.ledger.as_ref(),
            events,
            self.batch,
            &mut |w, n| {
                if let Written::Ledger(new) = w {
                    inserted += new;
                    m.with_label_values(&["persisted"]).inc_by(new);
                    m.with_label_values(&["duplicate"])
                        .inc_by((n as u64).saturating_sub(new));
                }
            },
            &mut |e, why| letters.push(DeadLetter::event(e.clone(), why.to_string())),
        )
        .await;
        match sent {
            Sent::All => Ok(inserted),
            Sent::UnavailableFrom(_, e) => Err(StreamError::Ledger(e)),
        }
    }

    /// Drops entries every consumer has acknowledged: those below the oldest
    /// pending one, or, with nothing pending, below the last delivered one.
    async fn trim(&self) {
        {
            let mut last = self.last_trim.lock();
            if last.is_some_and(|t| t.elapsed() < TRIM_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut pending = redis::cmd("XPENDING");
        pending.arg(&self.key).arg(GROUP);
        let summary: Result<(u64, Option<String>, Option<String>, redis::Value), _> =
            self.conn.query(&pending).await;
        let min_id = match summary {
            Ok((0, _, _, _)) => {
                let mut info = redis::cmd("XINFO");
                info.arg("GROUPS").arg(&self.key);
                let groups: Result<Vec<std::collections::HashMap<String, redis::Value>>, _> =
                    self.conn.query(&info).await;
                groups.ok().and_then(|gs| {
                    gs.into_iter()
                        .find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == GROUP.as_bytes()))
                        .and_then(|g| match g.get("last-delivered-id") {
                            Some(redis::Value::BulkString(id)) => String::from_utf8(id.clone()).ok(),
                            _ => None,
                        })
                })
            }
            Ok((_, Some(oldest), _, _)) => Some(oldest),
            _ => None,
        };
        if let Some(id) = min_id {
            let mut trim = redis::cmd("XTRIM");
            trim.arg(&self.key).arg("MINID").arg(id);
            if let Err(e) = self.conn.query::<u64>(&trim).await {
                tracing::warn!(error = %e, "usage stream not trimmed");
            }
        }
    }
}
