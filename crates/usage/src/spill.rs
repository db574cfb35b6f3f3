//! An append-only file of usage events the writer could not deliver because
//! the target was unreachable (Redis or the database down). The gateway
//! keeps serving instead of waiting on a full buffer; the writer delivers the
//! file when the target is back, including after a restart. One file per
//! process.

use std::path::{Path, PathBuf};

use paygate_core::UsageEvent;

use crate::jsonl;

pub struct SpillFile {
    path: PathBuf,
}

impl SpillFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends as JSON lines and syncs, so a crash after this loses nothing.
    pub async fn append(&self, batch: &[UsageEvent]) -> std::io::Result<()> {
        jsonl::append(&self.path, batch).await
    }

    pub async fn is_empty(&self) -> bool {
        tokio::fs::metadata(&self.path)
            .await
            .map_or(true, |m| m.len() == 0)
    }

    /// Everything spilled so far. A torn last line (crash mid-append) is skipped.
    pub async fn read_all(&self) -> std::io::Result<Vec<UsageEvent>> {
        jsonl::read(&self.path, "usage spill").await
    }

    /// Replaces the file's content with `events` (what is left to deliver).
    /// Only the writer that owns the file calls this, between its own appends.
    pub async fn replace(&self, events: &[UsageEvent]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("replacing");
        let _ = tokio::fs::remove_file(&tmp).await;
        jsonl::append(&tmp, events).await?;
        tokio::fs::rename(&tmp, &self.path).await
    }

    pub async fn clear(&self) -> std::io::Result<()> {
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
