//! SPEC §1 roles run as separate processes over a shared Redis and a
//! Postgres ledger: `paygate admin` (admin API only), `paygate gateway`
//! (proxy only) and `paygate billing run` (usage stream into the ledger).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use paygate_testkit::DbKind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_gateway_and_billing_run_as_separate_processes() {
    let ledger = Ledger::new(DbKind::Postgres);
    let mock = mock_upstream().await;
    let prefix = format!("roles-{}", uuid::Uuid::now_v7().simple());
    let cfg = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 1000\n{}",
        redis_url(),
        routes_for(mock.addr)
    );
    let mut admin = Paygate::start_as(ledger.path(), "admin", "admin", &cfg, Wait::Ready).await;
    let mut gw = Paygate::start_as(ledger.path(), "gw", "gateway", &cfg, Wait::Ready).await;
    let billing = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["billing", "run", "--config"])
        .arg(&admin.config_path)
        .env("PAYGATE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Records made through the admin process reach the gateway process.
    let key = admin
        .customer_with_plan("c", json!({"quota": {"calls": 100, "period": "month"}}))
        .await;
    eventually(
        "the gateway to accept a key made by the admin process",
        Duration::from_secs(5),
        || async { (gw.get("/v1/x", &key).await.status() == 200).then_some(()) },
    )
    .await;
    for _ in 0..4 {
        assert_eq!(gw.get("/v1/x", &key).await.status(), 200);
    }
    // The billing process moves the gateway's usage into the ledger, and the
    // admin process sees the gateway's counters in the shared store.
    admin.expect_ledger("c", 5, 0).await;
    let (s, bal) = admin
        .admin("GET", "/admin/v1/customers/c/balance", None)
        .await;
    assert_eq!(s, 200, "{bal}");
    assert_eq!(bal["quota"]["used"], 5, "{bal}");

    // The gateway's admin listener has no admin API, only operations.
    let (s, body) = gw.admin("GET", "/admin/v1/plans", None).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert!(gw
        .metrics()
        .await
        .contains("paygate_decisions_total{decision=\"admitted\"} 5"));
    // The admin process does not proxy.
    assert!(gw
        .client
        .get(format!("{}/v1/x", admin.gw))
        .send()
        .await
        .is_err());

    terminate(billing).await;
    gw.stop().await;
    admin.stop().await;
}

#[test]
fn gateway_and_admin_roles_refuse_a_store_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = embedded_config(dir.path());
    for role in ["gateway", "admin"] {
        let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
            .args([role, "--config"])
            .arg(&path)
            .env("PAYGATE_ADMIN_TOKEN", "t")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{role}: {err}");
        assert!(err.contains("store.backend"), "{role}: {err}");
        assert!(err.contains("paygate serve"), "{role}: {err}");
    }
}
