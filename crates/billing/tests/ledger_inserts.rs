//! The ledger holds each `request_id` once and the daily rollup counts
//! exactly the rows held: replays, duplicates inside one batch and batches
//! larger than one statement, on SQLite and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use paygate_billing::Database;
use paygate_core::UsageEvent;
use paygate_testkit::{DbKind, TestDb};

fn event(id: usize, credits: i64) -> UsageEvent {
    UsageEvent {
        request_id: format!("req-{id}"),
        ts: Utc::now(),
        customer_id: "c".into(),
        key_id: "k".into(),
        plan_id: "p".into(),
        route: "r".into(),
        method: "GET".into(),
        status: 200,
        billable: true,
        units: 2,
        overage_units: 0,
        amount_micros: credits,
        credits_micros: credits,
        period: "2026-11".into(),
        latency_us: 5,
    }
}

async fn units_and_spend(db: &Database) -> (u64, i64) {
    (
        db.units_in_period("c", "2026-11").await.unwrap(),
        -db.credit_balance("c").await.unwrap(),
    )
}

async fn every_request_is_counted_once(kind: DbKind) {
    let test_db = TestDb::new(kind);
    let db = Database::connect(&test_db.url).await.unwrap();

    // 150 events: more than two statements' worth.
    let first: Vec<_> = (0..150).map(|i| event(i, 10)).collect();
    assert_eq!(db.insert_events(&first).await.unwrap(), 150);
    assert_eq!(units_and_spend(&db).await, (300, 1500));

    // A replay of all of them, mixed with 100 new ones, some of which come
    // twice in the batch, one copy in another statement than the other.
    let mut second: Vec<_> = (100..250).map(|i| event(i, 10)).collect();
    second.push(event(160, 10));
    second.push(event(249, 10));
    second.insert(3, event(245, 10));
    second.extend(first.iter().cloned());
    assert_eq!(db.insert_events(&second).await.unwrap(), 100);
    assert_eq!(units_and_spend(&db).await, (500, 2500));
    assert_eq!(
        db.event_counts("c").await.unwrap().get(&true),
        Some(&250),
        "events held"
    );

    // Replaying everything again changes nothing.
    assert_eq!(db.insert_events(&second).await.unwrap(), 0);
    assert_eq!(units_and_spend(&db).await, (500, 2500));
}

paygate_testkit::on_both_databases!(every_request_is_counted_once);
