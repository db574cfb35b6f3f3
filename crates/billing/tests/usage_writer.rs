//! The usage writer delivering into the ledger itself (the embedded
//! pipeline): everything emitted lands once, and events the database refuses
//! for good are dead-lettered while the rest of their batch lands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use paygate_billing::Database;
use paygate_metrics::Metrics;
use paygate_testkit::{on_both_databases, DbKind, TestDb};
use paygate_usage::{pipeline, Batching, DeadLetterFile};

fn batching() -> Batching {
    Batching {
        buffer: 8,
        batch_size: 3,
        flush_interval: Duration::from_millis(5),
    }
}

async fn writer_drains_everything_before_exiting(kind: DbKind) {
    let test_db = TestDb::new(kind);
    let db = Database::connect(&test_db.url).await.unwrap();
    let metrics = Metrics::new().unwrap();
    let (sink, writer) = pipeline(Arc::new(db.clone()), metrics.clone(), batching());
    let task = tokio::spawn(writer.run());
    for i in 0..20 {
        sink.emit(common::event(i)).await;
    }
    sink.emit(common::event(0)).await;
    drop(sink);
    task.await.unwrap();
    assert_eq!(db.event_counts("c").await.unwrap().get(&true), Some(&20));
    assert_eq!(metrics.usage_backlog.get(), 0);
    assert_eq!(
        metrics.usage_events.with_label_values(&["duplicate"]).get(),
        1
    );
}
on_both_databases!(writer_drains_everything_before_exiting);

#[tokio::test]
async fn events_the_ledger_refuses_for_good_are_dead_lettered_and_the_batch_lands() {
    // Postgres refuses text holding a NUL byte (SQLSTATE 22021), for ever:
    // before typed errors, the writer retried such a batch without end.
    let test_db = TestDb::new(DbKind::Postgres);
    let db = Database::connect(&test_db.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let letters = DeadLetterFile::new(dir.path().join("dead.jsonl"));
    let metrics = Metrics::new().unwrap();
    let (sink, writer) = pipeline(Arc::new(db.clone()), metrics.clone(), batching());
    let task = tokio::spawn(
        writer
            .with_dead_letters(DeadLetterFile::new(letters.path()))
            .run(),
    );
    for i in 0..12 {
        let mut e = common::event(i);
        if i == 4 {
            e.key_id = "k\0".into();
        }
        sink.emit(e).await;
    }
    drop(sink);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the writer is not stuck on the refused event")
        .unwrap();
    assert_eq!(db.event_counts("c").await.unwrap().get(&true), Some(&11));
    let kept = letters.read_all().await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].event.as_ref().unwrap().request_id, "req-4");
    assert!(
        kept[0].reason.contains("22021") || kept[0].reason.contains("0x00"),
        "{}",
        kept[0].reason
    );
    assert_eq!(
        metrics
            .usage_events
            .with_label_values(&["dead_lettered"])
            .get(),
        1
    );
    assert_eq!(
        metrics.usage_events.with_label_values(&["persisted"]).get(),
        11
    );
    assert_eq!(metrics.usage_backlog.get(), 0);
}
