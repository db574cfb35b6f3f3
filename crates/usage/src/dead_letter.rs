//! Usage events a target refused for good (see [`crate::DeliveryError::Permanent`]),
//! kept as JSON lines with the reason, so that nothing is lost while the
//! cause is fixed. Nothing here is billed until it is replayed
//! ([`DeadLetterFile::replay`], `paygate billing replay-dead-letters`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use paygate_core::UsageEvent;
use serde::{Deserialize, Serialize};

use crate::isolate::{send_isolating, Sent};
use crate::jsonl;
use crate::{BatchTarget, DeliveryError};

/// One line of the dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub at: DateTime<Utc>,
    /// Why the target refused it, as the target said it.
    pub reason: String,
    /// The event, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<UsageEvent>,
    /// What arrived instead of an event (an unreadable stream entry), kept as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl DeadLetter {
    pub fn event(event: UsageEvent, reason: impl Into<String>) -> Self {
        Self {
            at: Utc::now(),
            reason: reason.into(),
            event: Some(event),
            raw: None,
        }
    }

    pub fn raw(raw: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            at: Utc::now(),
            reason: reason.into(),
            event: None,
            raw: Some(raw.into()),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Events the target took (new or already there).
    pub delivered: u64,
    /// Lines still refused, or unreadable, written back to the file.
    pub kept: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead-letter file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The target is unavailable; what was not delivered is back in the file.
    #[error("{0}; {1} line(s) kept in the dead-letter file")]
    Unavailable(DeliveryError, u64),
}

pub struct DeadLetterFile {
    path: PathBuf,
}

impl DeadLetterFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn append(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
        jsonl::append(&self.path, letters).await
    }

    /// Every line; a torn last line (crash mid-append) is skipped.
    pub async fn read_all(&self) -> std::io::Result<Vec<DeadLetter>> {
        jsonl::read(&self.path, "dead-letter").await
    }

    /// Sends every dead-lettered event to `target` again (after the cause was
    /// fixed). Lines the target still refuses stay in the file. The file is
    /// moved aside first, so events a running gateway dead-letters meanwhile
    /// are appended to a fresh file, not overwritten.
    pub async fn replay(
        &self,
        target: &dyn BatchTarget,
        batch_size: usize,
    ) -> Result<Replayed, ReplayError> {
        let io = |source| ReplayError::Io {
            path: self.path.clone(),
            source,
        };
        let taken = self
            .path
            .with_extension(format!("replaying-{}", std::process::id()));
        match tokio::fs::rename(&self.path, &taken).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replayed::default()),
            Err(e) => return Err(io(e)),
        }
        let letters: Vec<DeadLetter> = jsonl::read(&taken, "dead-letter").await.map_err(io)?;
        let (with_event, mut keep): (Vec<DeadLetter>, Vec<DeadLetter>) =
            letters.into_iter().partition(|l| l.event.is_some());
        let events: Vec<UsageEvent> = with_event.iter().filter_map(|l| l.event.clone()).collect();
        let mut report = Replayed::default();
        let mut still_refused = Vec::new();
        let sent = send_isolating(
            target,
            &events,
            batch_size,
            &mut |_, n| report.delivered += n as u64,
            &mut |e, why| still_refused.push(DeadLetter::event(e.clone(), why.to_string())),
        )
        .await;
        keep.extend(still_refused);
        let unavailable = match sent {
            Sent::All => None,
            Sent::UnavailableFrom(from, e) => {
                keep.extend_from_slice(&with_event[from..]);
                Some(e)
            }
        };
        report.kept = keep.len() as u64;
        jsonl::append(&self.path, &keep).await.map_err(io)?;
        tokio::fs::remove_file(&taken).await.map_err(io)?;
        match unavailable {
            Some(e) => Err(ReplayError::Unavailable(e, report.kept)),
            None => Ok(report),
        }
    }
}

/// Keeps events a target refused for good: counted in
/// `paygate_usage_events_total{state="dead_lettered"}`, appended to `file`,
/// and logged. Without a file, or when it cannot be written, every letter is
/// logged whole: the log is then the last copy.
pub async fn keep_dead_letters(
    file: Option<&DeadLetterFile>,
    letters: &[DeadLetter],
    metrics: &paygate_metrics::Metrics,
) {
    let Some(first) = letters.first() else {
        return;
    };
    metrics
        .usage_events
        .with_label_values(&["dead_lettered"])
        .inc_by(letters.len() as u64);
    let written = match file {
        Some(f) => f
            .append(letters)
            .await
            .map(|()| f.path())
            .map_err(|e| e.to_string()),
        None => Err("no dead-letter file".to_owned()),
    };
    match written {
        Ok(path) => tracing::error!(events = letters.len(), reason = %first.reason,
            file = %path.display(), "usage events refused for good; kept in the dead-letter file"),
        Err(why) => {
            for l in letters {
                let line = serde_json::to_string(l).unwrap_or_default();
                tracing::error!(dead_letter = %line, file_error = %why,
                    "usage event refused for good and not written to a dead-letter file");
            }
        }
    }
}
