//! SQLite has one writer at a time. Admin changes that read and then write
//! must wait for the usage writer instead of failing with `SQLITE_BUSY`
//! (which reached users as a 500 on `PATCH /admin/v1/customers`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use paygate_billing::audit::Actor;
use paygate_billing::records::{CustomerPatch, NewCustomer};
use paygate_billing::Database;
use paygate_core::{CustomerId, Plan, PlanId, UsageEvent};

fn plan(id: &str) -> Plan {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": id, "rate_limit": {"requests": 10, "per": "second"},
        "monthly_fee_micros": 1_000_000
    }))
    .unwrap()
}

fn event(i: usize) -> UsageEvent {
    UsageEvent {
        request_id: format!("req-{i}"),
        ts: Utc::now(),
        customer_id: "c".into(),
        key_id: "k".into(),
        plan_id: "a".into(),
        route: "r".into(),
        method: "GET".into(),
        status: 200,
        billable: true,
        units: 1,
        overage_units: 0,
        amount_micros: 0,
        credits_micros: 0,
        period: "2026-11".into(),
        latency_us: 5,
    }
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

    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            for batch in 0..200 {
                let events: Vec<_> = (0..20).map(|i| event(batch * 20 + i)).collect();
                db.insert_events(&events).await.unwrap();
            }
        })
    };
    let mut changes = 0;
    while !writer.is_finished() {
        let plan_id = if changes % 2 == 0 { "b" } else { "a" };
        let patch = CustomerPatch {
            name: None,
            email: None,
            plan_id: Some(PlanId::new(plan_id).unwrap()),
        };
        db.patch_customer("c", patch, &actor, Utc::now())
            .await
            .unwrap_or_else(|e| panic!("plan change {changes} failed: {e}"));
        changes += 1;
    }
    writer.await.unwrap();
    assert!(changes > 10, "the writer finished before the test raced it");
}
