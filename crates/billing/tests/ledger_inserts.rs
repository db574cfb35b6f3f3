//! The ledger holds each `request_id` once and the daily rollup counts
//! exactly the rows held: replays, duplicates inside one batch and batches
//! larger than one statement; and reports over any range are exact. On
//! SQLite and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use paygate_billing::Database;
use paygate_core::UsageEvent;
use paygate_testkit::{DbKind, TestDb};

/// A call of 2 units paid with `credits`.
fn event(id: usize, credits: i64) -> UsageEvent {
    UsageEvent {
        units: 2,
        amount_micros: credits,
        credits_micros: credits,
        ..common::event(id)
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

/// A report bounded inside a day is summed from the events themselves,
/// exactly; whole days come from the rollup; both agree where they overlap.
async fn reports_between_any_two_instants_are_exact(kind: DbKind) {
    use chrono::TimeZone;
    use paygate_billing::aggregate::{Dimension, Filter};

    let test_db = TestDb::new(kind);
    let db = Database::connect(&test_db.url).await.unwrap();
    let at = |d: u32, h: u32, m: u32| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
    // One call an hour on 2 and 3 November, 10 micros each.
    let events: Vec<_> = (0..48)
        .map(|i| {
            let mut e = event(i, 10);
            e.ts = at(2 + i as u32 / 24, i as u32 % 24, 30);
            e
        })
        .collect();
    db.insert_events(&events).await.unwrap();
    let report = |from, to| {
        let db = db.clone();
        async move {
            let f = Filter {
                customer_id: Some("c".into()),
                from,
                to,
                ..Filter::default()
            };
            let r = db.usage_report(&f, &[Dimension::Day]).await.unwrap();
            let days: Vec<(String, i64)> = r
                .data
                .iter()
                .map(|row| (row.day.clone().unwrap(), row.calls))
                .collect();
            (days, r.totals.calls, r.totals.amount_micros)
        }
    };
    // 2 Nov 10:00 to 3 Nov 02:45: 14 calls on the 2nd, 3 on the 3rd.
    let (days, calls, amount) = report(Some(at(2, 10, 0)), Some(at(3, 2, 45))).await;
    assert_eq!(
        days,
        [("2026-11-02".to_owned(), 14), ("2026-11-03".to_owned(), 3)]
    );
    assert_eq!((calls, amount), (17, 170));
    // From an instant, open-ended; and whole days from the rollup.
    assert_eq!(report(Some(at(3, 23, 0)), None).await.1, 1);
    assert_eq!(report(Some(at(2, 0, 0)), Some(at(3, 0, 0))).await.1, 24);
    assert_eq!(report(None, Some(at(2, 0, 0))).await.1, 0);
}

/// A paid call: a settled (or failed, or unknown) x402 payment of 17,000
/// micros with this nonce.
fn paid(id: usize, nonce: &str, state: paygate_core::PaymentState) -> UsageEvent {
    UsageEvent {
        units: 0,
        billable: state == paygate_core::PaymentState::Settled,
        payment: Some(paygate_core::Payment {
            payer: "0xab".into(),
            amount_micros: 17_000,
            amount_units: "17000".into(),
            asset: "0xa".into(),
            network: "eip155:84532".into(),
            nonce: nonce.into(),
            valid_before: 4_000_000_000,
            transaction: None,
            state,
            reason: None,
        }),
        ..common::event(id)
    }
}

async fn a_payment_identity_is_held_once(kind: DbKind) {
    use paygate_billing::payments::PaymentFilter;
    use paygate_core::PaymentState::{Failed, Settled, SettlementUnknown};
    let test_db = TestDb::new(kind);
    let db = Database::connect(&test_db.url).await.unwrap();
    // Failed twice (no money moved, the client may send it again), then settled.
    let events = [
        paid(1, "0x01", Failed),
        paid(2, "0x01", Failed),
        paid(3, "0x01", Settled),
    ];
    assert_eq!(db.insert_events(&events).await.unwrap(), 3);
    // The same identity settled again by another call, and unknown by a third:
    // the ledger keeps the first; the calls' events are still held.
    let again = [paid(4, "0x01", Settled), paid(5, "0x01", SettlementUnknown)];
    assert_eq!(db.insert_events(&again).await.unwrap(), 2);
    let all = db
        .list_payments(&PaymentFilter::default(), 100, None)
        .await
        .unwrap();
    let states: Vec<(&str, &str)> = all
        .data
        .iter()
        .map(|p| (p.request_id.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(
        states
            .iter()
            .all(|(id, _)| ["req-1", "req-2", "req-3"].contains(id)),
        "{states:?}"
    );
    // 70 payments in one batch: more than one statement's worth; replayed, none twice.
    let many: Vec<_> = (10..80)
        .map(|i| paid(i, &format!("0x{i:02x}"), Settled))
        .collect();
    assert_eq!(db.insert_events(&many).await.unwrap(), 70);
    assert_eq!(db.insert_events(&many).await.unwrap(), 0);
    let r = db
        .usage_report(&paygate_billing::aggregate::Filter::default(), &[])
        .await
        .unwrap();
    assert_eq!(
        (r.totals.x402_calls, r.totals.x402_amount_micros),
        (71, 71 * 17_000)
    );
    assert_eq!(db.live_claims(Utc::now()).await.unwrap().len(), 71);
}

paygate_testkit::on_both_databases!(
    every_request_is_counted_once,
    reports_between_any_two_instants_are_exact,
    a_payment_identity_is_held_once,
);
