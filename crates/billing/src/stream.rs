//! Usage events through a Redis Stream (production mode).
//!
//! Gateways `XADD` events in batches (one pipelined round trip per batch) to
//! `{<prefix>:usage}`. The billing consumer reads them with a consumer group
//! (`XREADGROUP`), inserts them into the ledger with
//! `ON CONFLICT (request_id) DO NOTHING`, and acknowledges (`XACK`) only after
//! the commit. Entries left pending by a dead consumer are taken over with
//! `XAUTOCLAIM`. Only acknowledged entries are trimmed. In transit an event
//! is at least once; in the ledger it is exactly once.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use paygate_core::UsageEvent;
use paygate_metrics::Metrics;
use paygate_store::RedisConn;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use crate::ledger::{BatchTarget, Written};
use crate::Database;

pub const GROUP: &str = "billing";
const FIELD: &str = "e";

pub fn stream_key(prefix: &str) -> String {
    format!("{{{prefix}:usage}}")
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
    async fn write(&self, batch: &[UsageEvent]) -> Result<Written, String> {
        if self.down_until.lock().is_some_and(|t| Instant::now() < t) {
            return Err("usage stream unreachable (cooling down)".into());
        }
        let mut pipe = redis::pipe();
        for e in batch {
            let json = serde_json::to_string(e).map_err(|e| e.to_string())?;
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg(FIELD)
                .arg(json)
                .ignore();
        }
        let sent =
            tokio::time::timeout(Duration::from_secs(1), self.conn.pipeline::<()>(&pipe)).await;
        let result = match sent {
            Ok(Ok(())) => Ok(Written::Streamed(batch.len() as u64)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("XADD timed out".into()),
        };
        *self.down_until.lock() = result.is_err().then(|| Instant::now() + COOL_DOWN);
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
    db: Database,
    metrics: Metrics,
    batch: usize,
    claim_idle: Duration,
    /// The group exists (checked once, again after Redis answers NOGROUP).
    group_ready: std::sync::atomic::AtomicBool,
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
        db: Database,
        metrics: Metrics,
        claim_idle: Duration,
    ) -> Self {
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        Self {
            conn,
            key: stream_key(prefix),
            name,
            db,
            metrics,
            batch: 512,
            claim_idle,
            group_ready: std::sync::atomic::AtomicBool::new(false),
            last_trim: parking_lot::Mutex::new(None),
        }
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

    async fn ensure_group(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering;
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
            Err(e) if !e.to_string().contains("BUSYGROUP") => Err(e.to_string()),
            _ => {
                self.group_ready.store(true, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// A Redis that lost its data has no group any more: create it again.
    fn note_error(&self, e: &str) {
        if e.contains("NOGROUP") {
            self.group_ready
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Takes over entries idle longer than `claim_idle` (a dead consumer's),
    /// then reads new ones, blocking up to `block`.
    pub async fn round(&self, ack: Ack, block: Duration) -> Result<Round, String> {
        let r = self.round_inner(ack, block).await;
        if let Err(e) = &r {
            self.note_error(e);
        }
        r
    }

    async fn round_inner(&self, ack: Ack, block: Duration) -> Result<Round, String> {
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
        let claimed: StreamAutoClaimReply =
            self.conn.query(&claim).await.map_err(|e| e.to_string())?;
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
        let reply: Option<StreamReadReply> =
            self.conn.query(&read).await.map_err(|e| e.to_string())?;
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        let fresh = self.process(entries, ack).await?;
        round.read += fresh.read;
        round.inserted += fresh.inserted;
        round.acked += fresh.acked;
        Ok(round)
    }

    async fn process(&self, entries: Vec<StreamId>, ack: Ack) -> Result<Round, String> {
        if entries.is_empty() {
            return Ok(Round::default());
        }
        let mut events = Vec::with_capacity(entries.len());
        for entry in &entries {
            match entry
                .get::<String>(FIELD)
                .map(|s| serde_json::from_str::<UsageEvent>(&s))
            {
                Some(Ok(e)) => events.push(e),
                // Unreadable entries are acknowledged below so they do not
                // block the group forever; say so loudly.
                _ => tracing::error!(id = %entry.id, "unreadable usage entry skipped"),
            }
        }
        let inserted = self
            .db
            .insert_events(&events)
            .await
            .map_err(|e| e.to_string())?;
        let m = &self.metrics.usage_events;
        m.with_label_values(&["persisted"]).inc_by(inserted);
        m.with_label_values(&["duplicate"])
            .inc_by(events.len() as u64 - inserted);
        let mut round = Round {
            read: entries.len(),
            inserted,
            acked: 0,
        };
        if ack == Ack::Skip {
            return Ok(round);
        }
        let mut xack = redis::cmd("XACK");
        xack.arg(&self.key).arg(GROUP);
        for e in &entries {
            xack.arg(&e.id);
        }
        let acked: usize = self.conn.query(&xack).await.map_err(|e| e.to_string())?;
        round.acked = acked;
        self.trim().await;
        Ok(round)
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
