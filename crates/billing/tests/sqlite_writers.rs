//! SQLite has one writer at a time. Admin changes that read and then write
//! must wait for the usage writer instead of failing with `SQLITE_BUSY`
//! (which reached users as a 500 on `PATCH /admin/v1/customers`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use common::event;
use paygate_billing::audit::Actor;
use paygate_billing::records::{CustomerPatch, NewCustomer};
use paygate_billing::Database;
use paygate_core::{CustomerId, Plan, PlanId};

fn plan(id: &str) -> Plan {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": id, "rate_limit": {"requests": 10, "per": "second"},
        "monthly_fee_micros": 1_000_000
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_wait_for_the_usage_writer_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await
        .unwrap();
    let actor = Actor::system();
    for id in ["a", "b"] {
        db.create_plan(&plan(id), &actor).await.unwrap();
    }
    let customer = NewCustomer {
        id: CustomerId::new("c").unwrap(),
        name: "C".into(),
        email: "c@example.com".into(),
        plan_id: PlanId::new("a").unwrap(),
    };
    db.create_customer(customer, &actor, Utc::now())
        .await
        .unwrap();

    // The usage writer commits batches for as long as the admin side runs.
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (db, stop, batches) = (db.clone(), Arc::clone(&stop), Arc::clone(&batches));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<_> = (0..20).map(|i| event(n * 20 + i)).collect();
                db.insert_events(&events).await.unwrap();
                batches.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };
    // Each plan change starts after another batch was committed, so the
    // two really interleave (a busy writer could otherwise be starved).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = 0;
    for change in 0..30 {
        while batches.load(Ordering::Relaxed) == seen {
            assert!(!writer.is_finished(), "the usage writer failed");
            assert!(std::time::Instant::now() < deadline, "the writer stalled");
            tokio::task::yield_now().await;
        }
        seen = batches.load(Ordering::Relaxed);
        let plan_id = if change % 2 == 0 { "b" } else { "a" };
        let patch = CustomerPatch {
            name: None,
            email: None,
            plan_id: Some(PlanId::new(plan_id).unwrap()),
        };
        db.patch_customer("c", patch, &actor, Utc::now())
            .await
            .unwrap_or_else(|e| panic!("plan change {change} failed: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
}
