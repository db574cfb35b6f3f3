//! An append-only file of usage events the writer could not deliver (Redis
//! or the database unreachable). The gateway keeps serving instead of waiting
//! on a full buffer; the writer delivers the file when the target is back,
//! including after a restart. One file per process.

use std::path::PathBuf;

use paygate_core::UsageEvent;
use tokio::io::AsyncWriteExt;

pub struct SpillFile {
    path: PathBuf,
}

impl SpillFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Appends as JSON lines and syncs, so a crash after this loses nothing.
    pub async fn append(&self, batch: &[UsageEvent]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(batch.len() * 256);
        for e in batch {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        f.write_all(&buf).await?;
        f.sync_data().await
    }

    pub async fn is_empty(&self) -> bool {
        tokio::fs::metadata(&self.path)
            .await
            .map_or(true, |m| m.len() == 0)
    }

    /// Everything spilled so far. A torn last line (crash mid-append) is skipped.
    pub async fn read_all(&self) -> std::io::Result<Vec<UsageEvent>> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text
            .lines()
            .filter_map(|l| match serde_json::from_str(l) {
                Ok(e) => Some(e),
                Err(err) => {
                    tracing::error!(error = %err, "unreadable line in the usage spill file skipped");
                    None
                }
            })
            .collect())
    }

    pub async fn clear(&self) -> std::io::Result<()> {
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
