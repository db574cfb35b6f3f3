//! What keeps an invoice exact after it is finalized, on SQLite and Postgres:
//! a plan change after the close is billed on the next invoice, the database
//! refuses any change to a finalized one (new lines, replacing, truncating),
//! and a ledger written before the billing migration keeps its overage money
//! on invoices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeZone, Utc};
use paygate_billing::aggregate::Filter;
use paygate_billing::audit::Actor;
use paygate_billing::records::{CustomerPatch, NewCustomer};
use paygate_billing::Database;
use paygate_core::{CustomerId, Plan, PlanId};
use paygate_testkit::{DbKind, TestDb};

fn plan(id: &str, fee: i64) -> Plan {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": id, "rate_limit": {"requests": 10, "per": "second", "burst": 20},
        "quota": {"calls": 1, "period": "month"}, "overage": {"price_micros": 200},
        "monthly_fee_micros": fee
    }))
    .unwrap()
}

fn at(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, h, 0, 0).unwrap()
}

/// A migrated ledger of `kind` holding `plans` (id, monthly fee).
async fn ledger_with_plans(kind: DbKind, plans: &[(&str, i64)]) -> (TestDb, Database) {
    let t = TestDb::new(kind);
    let db = Database::connect(&t.url).await.unwrap();
    for (id, fee) in plans {
        db.create_plan(&plan(id, *fee), &Actor::system())
            .await
            .unwrap();
    }
    (t, db)
}

async fn customer_on(db: &Database, plan_id: &str, created: DateTime<Utc>) {
    let c = NewCustomer {
        id: CustomerId::new("c").unwrap(),
        name: "C".into(),
        email: "c@example.com".into(),
        plan_id: PlanId::new(plan_id).unwrap(),
    };
    db.create_customer(c, &Actor::system(), created)
        .await
        .unwrap();
}

/// A customer anchored on the 15th is still in its "2026-11" period when
/// November is closed on 1 December. Its invoice is final from then on; a
/// plan change on 5 December is billed as a fee adjustment on the next
/// invoice, so the period's fee is what the proration rule says.
async fn a_plan_change_after_close_is_billed_on_the_next_invoice(kind: DbKind) {
    let (_t, db) = ledger_with_plans(kind, &[("small", 30_000_000), ("big", 90_000_000)]).await;
    let a = Actor::system();
    customer_on(&db, "small", at(11, 15, 9)).await;
    let nov = "2026-11".parse().unwrap();

    let closed = db.close_period(nov, &a, at(12, 1, 1)).await.unwrap();
    let [inv] = closed.data.as_slice() else {
        panic!("{closed:?}")
    };
    assert_eq!(inv.total_micros, 30_000_000);
    assert_eq!(
        inv.finalized_at,
        Some(at(12, 1, 1)),
        "the close's own clock"
    );

    let to_big = CustomerPatch {
        name: None,
        email: None,
        plan_id: Some(PlanId::new("big").unwrap()),
    };
    db.patch_customer("c", to_big, &a, at(12, 5, 10))
        .await
        .unwrap();

    let c = db.get_customer("c").await.unwrap();
    let finalized = db
        .invoice_for(&c, nov, at(12, 20, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        finalized.total_micros, 30_000_000,
        "finalized stays as it was"
    );
    let dec = "2026-12".parse().unwrap();
    let next = db
        .invoice_for(&c, dec, at(12, 20, 0))
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<_> = next
        .lines
        .iter()
        .map(|l| (l.kind.as_str(), l.source_period.as_str(), l.amount_micros))
        .collect();
    // 15 Nov - 15 Dec is 30 days: 20 on the small plan, 10 on the big one
    // (the day of the change at the new plan), minus the 30,000,000 billed.
    let nov_fee = 30_000_000 * 20 / 30 + 90_000_000 * 10 / 30;
    assert_eq!(
        lines,
        [
            ("fee", "2026-12", 90_000_000),
            ("adjustment", "2026-11", nov_fee - 30_000_000)
        ]
    );

    // Closing December bills the adjustment once: January owes nothing more
    // for November.
    db.close_period(dec, &a, at(12, 20, 0)).await.unwrap();
    let jan = db
        .invoice_for(&c, "2027-01".parse().unwrap(), at(12, 20, 0))
        .await
        .unwrap()
        .unwrap();
    assert!(
        jan.lines.iter().all(|l| l.kind.as_str() == "fee"),
        "{:?}",
        jan.lines
    );
}

async fn finalized_invoices_refuse_every_change(kind: DbKind) {
    let (t, db) = ledger_with_plans(kind, &[("small", 30_000_000)]).await;
    let a = Actor::system();
    customer_on(&db, "small", at(10, 1, 9)).await;
    let closed = db
        .close_period("2026-10".parse().unwrap(), &a, at(11, 2, 0))
        .await
        .unwrap();
    assert_eq!(closed.data.len(), 1);

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&t.url).await.unwrap();
    let mut refused = vec![
        "INSERT INTO invoice_lines (invoice_id, line_no, kind, charge, source_period, description, \
         route, quantity, unit_price_micros, amount_micros) \
         VALUES ('inv_2026-10_c', 99, 'fee', 'fee', '2026-10', 'x', NULL, 1, 5, 5)",
        "INSERT INTO invoice_lines (invoice_id, line_no, kind, charge, source_period, description, \
         route, quantity, unit_price_micros, amount_micros) \
         VALUES ('inv_2026-10_c', 0, 'fee', 'fee', '2026-10', 'x', NULL, 1, 5, 5)",
        "UPDATE invoices SET total_micros = 0",
        "DELETE FROM invoice_lines",
    ];
    match kind {
        DbKind::Sqlite => refused.extend([
            "INSERT OR REPLACE INTO invoices (id, number, customer_id, period, currency, \
             total_micros, credits_applied_micros, finalized_at, line_count) \
             VALUES ('inv_2026-10_c', 1, 'c', '2026-10', 'USD', 0, 0, 'x', 0)",
            "INSERT OR REPLACE INTO invoice_lines (invoice_id, line_no, kind, charge, \
             source_period, description, route, quantity, unit_price_micros, amount_micros) \
             VALUES ('inv_2026-10_c', 1, 'fee', 'fee', '2026-10', 'x', NULL, 1, 0, 0)",
        ]),
        DbKind::Postgres => refused.extend(["TRUNCATE invoice_lines", "TRUNCATE invoices CASCADE"]),
    }
    for sql in refused {
        let r = sqlx::query(sql).execute(&pool).await;
        let err = r.expect_err(sql).to_string();
        assert!(err.contains("immutable"), "{sql}: {err}");
    }
    let c = db.get_customer("c").await.unwrap();
    let inv = db
        .invoice_for(&c, "2026-10".parse().unwrap(), at(11, 2, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inv.total_micros, 30_000_000);
    assert_eq!(
        inv.lines.iter().map(|l| l.amount_micros).sum::<i64>(),
        30_000_000
    );
}

/// Before the billing migration a call's `amount_micros` held its overage
/// price; the migration must carry it into the rollup as overage so the
/// invoice bills what the usage report shows.
async fn an_upgraded_ledger_keeps_its_overage_on_invoices(kind: DbKind) {
    let t = TestDb::new(kind);
    let backend = match kind {
        DbKind::Sqlite => "sqlite",
        DbKind::Postgres => "postgres",
    };
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let before = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0003" {
            std::fs::copy(&path, before.path().join(name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let url = match kind {
        DbKind::Sqlite => format!("{}?mode=rwc", t.url),
        DbKind::Postgres => t.url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(before.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO plans (id, body, created_at, updated_at) VALUES ('premium', $1, 'x', 'x')",
    )
    .bind(serde_json::to_string(&plan("premium", 0)).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO customers (id, name, email, plan_id, anchor_day, created_at) \
         VALUES ('c', 'C', 'c@example.com', 'premium', 1, '2026-10-01T08:00:00.000000Z')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // One call inside the quota, two past it at 200 micros.
    for (i, amount) in [(1, 0i64), (2, 200), (3, 200)] {
        sqlx::query(
            "INSERT INTO usage_events (request_id, ts_us, customer_id, key_id, plan_id, route, \
             method, status, billable, units, amount_micros, credits_micros, period, latency_us) \
             VALUES ($1, $2, 'c', 'k', 'premium', 'r', 'GET', 200, 1, 1, $3, 0, '2026-10', 5)",
        )
        .bind(format!("req-{i}"))
        .bind(at(10, 5, 12).timestamp_micros())
        .bind(amount)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let db = Database::connect(&t.url).await.unwrap();
    let filter = Filter {
        customer_id: Some("c".into()),
        period: Some("2026-10".into()),
        ..Filter::default()
    };
    let report = db.usage_report(&filter, &[]).await.unwrap();
    assert_eq!(report.totals.amount_micros, 400);
    let c = db.get_customer("c").await.unwrap();
    let inv = db
        .invoice_for(&c, "2026-10".parse().unwrap(), at(11, 2, 0))
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<_> = inv
        .lines
        .iter()
        .map(|l| {
            (
                l.kind.as_str(),
                l.quantity,
                l.unit_price_micros,
                l.amount_micros,
            )
        })
        .collect();
    assert_eq!(lines, [("usage", 1, 0, 0), ("overage", 2, 200, 400)]);
    assert_eq!(inv.total_micros, report.totals.amount_micros);
}

paygate_testkit::on_both_databases!(
    a_plan_change_after_close_is_billed_on_the_next_invoice,
    finalized_invoices_refuse_every_change,
    an_upgraded_ledger_keeps_its_overage_on_invoices,
);
