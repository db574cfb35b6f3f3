//! paygate driven as a library, in this test process: `App::build` /
//! `App::run` with a shutdown trigger instead of signals, the same wiring
//! the binary runs. The process-level tests (`gateway_e2e`, …) cover the
//! binary; these cover what only a library makes easy: stopping on demand
//! and checking what the ledger holds right after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, free_port, mock_upstream, TOKEN};
use paygate_app::{App, AppError, Role, ShutdownTrigger};
use serde_json::{json, Value};

fn config(
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
    gw_port: u16,
) -> paygate_config::Config {
    let text = format!(
        r#"
[gateway]
listen = "127.0.0.1:{gw_port}"
threads = 1
shutdown_grace_seconds = 0

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[auth]
key_secret = "in-process-secret"

[database]
url = "sqlite://{db}"

[usage]
flush_interval_ms = 5
dead_letter_path = "{dead}"

[[upstreams]]
name = "mock"
targets = ["{upstream}"]

[[routes]]
id = "x"
path_prefix = "/v1"
upstream = "mock"
"#,
        db = dir.join("ledger.db").display(),
        dead = dir.join("dead.jsonl").display(),
    );
    paygate_config::parse(&text, std::iter::empty()).unwrap()
}

async fn admin(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let resp = client
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[test]
fn an_app_run_in_process_meters_calls_and_writes_them_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let mock = client_rt.block_on(mock_upstream());
    let gw_port = free_port();

    // Built outside any runtime: the app brings its own two.
    let app = App::build(config(dir.path(), mock.addr, gw_port), Role::All).unwrap();
    let admin_base = format!("http://{}", app.admin_addr());
    let (trigger, shutdown) = ShutdownTrigger::new();
    let running = std::thread::spawn(move || app.run(shutdown));

    let client = reqwest::Client::new();
    let key = client_rt.block_on(async {
        let plan = json!({"id": "p", "name": "P", "rate_limit": {"requests": 1000, "per": "second"},
                          "quota": {"calls": 2, "period": "month"}});
        admin(&client, &admin_base, "/admin/v1/plans", plan).await;
        let customer = json!({"id": "c", "name": "C", "email": "c@example.com", "plan_id": "p"});
        admin(&client, &admin_base, "/admin/v1/customers", customer).await;
        let key = admin(
            &client,
            &admin_base,
            "/admin/v1/customers/c/keys",
            json!({}),
        )
        .await;
        key["key"].as_str().unwrap().to_owned()
    });
    let statuses: Vec<u16> = client_rt.block_on(async {
        let gw = format!("http://127.0.0.1:{gw_port}");
        eventually("the gateway to listen", Duration::from_secs(10), || {
            let (client, gw) = (client.clone(), gw.clone());
            async move { client.get(format!("{gw}/")).send().await.ok().map(|_| ()) }
        })
        .await;
        let mut out = Vec::new();
        for _ in 0..3 {
            let r = client
                .get(format!("{gw}/v1/prices"))
                .header("x-api-key", &key)
                .send()
                .await
                .unwrap();
            out.push(r.status().as_u16());
        }
        out
    });
    assert_eq!(statuses, [200, 200, 402], "a quota of 2, then 402");

    // Stop: the gateway drains, and `run` returns only once the usage of
    // every admitted call is in the ledger.
    trigger.stop();
    running.join().unwrap().unwrap();
    let counts = client_rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let db = paygate_billing::Database::open(&url).await.unwrap();
        db.event_counts("c").await.unwrap()
    });
    assert_eq!(counts.get(&true), Some(&2));
    assert_eq!(
        counts.get(&false),
        None,
        "the refused call has no usage event"
    );
    assert_eq!(mock.hits(), 2);
}

#[test]
fn an_admin_api_without_a_token_is_refused_at_build_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), "127.0.0.1:9".parse().unwrap(), free_port());
    config.admin.token = None;
    config.admin.token_env = "PAYGATE_TEST_TOKEN_THAT_IS_NOT_SET".into();
    let err = App::build(config.clone(), Role::All).err().unwrap();
    assert!(
        matches!(
            err,
            AppError::Setting {
                key: "admin.token_env",
                ..
            }
        ),
        "{err}"
    );
    // The gateway role serves no admin API: it needs no token (it does need
    // the Redis store, which `paygate gateway` checks before building).
    let msg = App::build(config, Role::Gateway)
        .map(|_| ())
        .err()
        .map(|e| e.to_string());
    assert_eq!(msg, None);
}
