//! `paygate billing reconcile` and the `paygate_usage_drift` gauge, in
//! production mode (Redis store, Postgres ledger): counters that agree with
//! the ledger show no drift, counters changed behind the ledger's back (as a
//! gateway killed between admission and its usage event would leave them)
//! show exactly the difference.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use paygate_testkit::DbKind;
use serde_json::json;

/// Runs `paygate billing reconcile`; returns (exit code, stdout, stderr).
fn reconcile(config: &std::path::Path, period: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["billing", "reconcile", "--config"])
        .arg(config)
        .args(["--period", period])
        .env("PAYGATE_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of `customer` in the table, split into its columns.
fn row(out: &str, customer: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(customer))
        .unwrap_or_else(|| panic!("no line for {customer} in:\n{out}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn gauge(metrics: &str, counter: &str) -> Option<i64> {
    let name = format!("paygate_usage_drift{{counter=\"{counter}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&name))
        .map(|v| v.trim().parse().unwrap())
}

/// Waits for `paygate_usage_drift` to read `quota_units` and `credits_micros`.
async fn drift_gauge_reads(pg: &Paygate, quota_units: i64, credits_micros: i64) {
    eventually("the drift gauge", Duration::from_secs(10), || async move {
        let m = pg.metrics().await;
        (gauge(&m, "quota_units") == Some(quota_units)
            && gauge(&m, "credits_micros") == Some(credits_micros))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_reports_exactly_the_drift_between_store_and_ledger() {
    let ledger = Ledger::new(DbKind::Postgres);
    let mock = mock_upstream().await;
    let prefix = format!("rec-{}", uuid::Uuid::now_v7().simple());
    let cfg = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\n# Generous: this test is about drift, not store deadlines on a loaded machine.\ntimeout_ms = 1000\n\n[usage]\nflush_interval_ms = 5\ndrift_interval_ms = 100\n{}",
        redis_url(),
        routes_for(mock.addr)
    );
    let mut pg = Paygate::start_named(ledger.path(), "a", &cfg, Wait::Ready).await;
    let quota_key = pg
        .customer_with_plan("rq", json!({"quota": {"calls": 100, "period": "month"}}))
        .await;
    let credit_key = pg
        .customer_with_plan("rc", json!({"price_per_call_micros": 1000}))
        .await;
    let (s, b) = pg
        .admin(
            "POST",
            "/admin/v1/customers/rc/credits",
            Some(json!({"amount_micros": 10_000, "reference": "t1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    for _ in 0..7 {
        assert_eq!(pg.get("/v1/x", &quota_key).await.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(pg.get("/v1/x", &credit_key).await.status(), 200);
    }
    pg.expect_ledger("rq", 7, 0).await;
    pg.expect_ledger("rc", 3, 0).await;
    let (s, bal) = pg
        .admin("GET", "/admin/v1/customers/rq/balance", None)
        .await;
    assert_eq!(s, 200);
    let period = bal["period"].as_str().unwrap().to_string();

    // The store agrees with the ledger: the gauge settles at 0 (a round
    // measured while calls were in flight may still show their reservations).
    drift_gauge_reads(&pg, 0, 0).await;
    let (code, out, err) = reconcile(&pg.config_path, &period);
    assert_eq!(code, 0, "{out}{err}");
    let rq = row(&out, "rq");
    assert_eq!(&rq[1..4], ["7", "7", "0"], "{out}");
    let rc = row(&out, "rc");
    assert_eq!(rc[1], "no", "a plan without quota: {out}");
    assert_eq!(&rc[rc.len() - 3..], ["7000", "7000", "0"], "{out}");
    assert!(out.contains("2 customer(s), 0 with drift"), "{out}");

    // Counters moved without a usage event, as a gateway killed after
    // admission would leave them: 5 units and 2,000 micros of drift.
    on_shared_redis(
        redis::cmd("HINCRBY")
            .arg(format!("{{{prefix}:c:rq}}"))
            .arg("used")
            .arg(5),
    )
    .await;
    on_shared_redis(
        redis::cmd("HINCRBY")
            .arg(format!("{{{prefix}:c:rc}}"))
            .arg("credits")
            .arg(-2000),
    )
    .await;
    drift_gauge_reads(&pg, 5, 2000).await;
    pg.stop().await;
    let (code, out, err) = reconcile(&pg.config_path, &period);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(&row(&out, "rq")[1..4], ["12", "7", "5"], "{out}");
    let rc = row(&out, "rc");
    assert_eq!(&rc[rc.len() - 3..], ["5000", "7000", "-2000"], "{out}");
    assert!(out.contains("2 customer(s), 2 with drift"), "{out}");

    // Another period: quota is not comparable (the store keeps only this
    // period's counter), credits still are.
    let (code, out, _) = reconcile(&pg.config_path, "2001-01");
    assert_eq!(code, 1, "{out}");
    assert_eq!(&row(&out, "rq")[1..4], ["n/a", "n/a", "-"], "{out}");

    on_shared_redis(
        redis::cmd("DEL")
            .arg(format!("{{{prefix}:c:rq}}"))
            .arg(format!("{{{prefix}:c:rc}}")),
    )
    .await;
    let (code, out, _) = reconcile(&pg.config_path, &period);
    assert_eq!(code, 0, "counters the store lost are not drift: {out}");
    assert!(row(&out, "rq").contains(&"seeded".to_string()), "{out}");
}

#[test]
fn reconcile_refuses_what_it_cannot_compare() {
    let dir = tempfile::tempdir().unwrap();
    let path = embedded_config(dir.path());
    for bad in ["2026-13", "november", ""] {
        let (code, _, err) = reconcile(&path, bad);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--period"), "{err}");
    }
    let (code, _, err) = reconcile(&path, "2026-11");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("store.backend"), "{err}");
}
