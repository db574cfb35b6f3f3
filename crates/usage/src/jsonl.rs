//! JSON-lines files: the spill file and the dead-letter file are both
//! append-only, synced, and read back line by line.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

/// Appends `items` as JSON lines and syncs, so a crash after this loses nothing.
pub(crate) async fn append<T: Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::with_capacity(items.len() * 256);
    for item in items {
        serde_json::to_writer(&mut buf, item)?;
        buf.push(b'\n');
    }
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    f.write_all(&buf).await?;
    f.sync_data().await
}

/// Every line of `path` (none when it does not exist). A line that does not
/// parse, such as a torn last line after a crash mid-append, is skipped
/// with an error naming `what` file it was in.
pub(crate) async fn read<T: DeserializeOwned>(path: &Path, what: &str) -> std::io::Result<Vec<T>> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(item) => Some(item),
            Err(err) => {
                tracing::error!(error = %err, file = what, "unreadable line skipped");
                None
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn lines_round_trip_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        assert!(read::<u32>(&path, "test").await.unwrap().is_empty());
        append(&path, &[1u32, 2]).await.unwrap();
        append(&path, &[3u32]).await.unwrap();
        // A crash in the middle of an append.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"torn"))
            .unwrap();
        assert_eq!(read::<u32>(&path, "test").await.unwrap(), [1, 2, 3]);
    }
}
