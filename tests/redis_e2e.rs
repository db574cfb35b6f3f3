//! Production mode: gateways that share one Redis enforce one quota, one
//! credit balance, and survive Redis being absent or losing its data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use paygate_testkit::RedisServer;
use std::time::Duration;

use common::*;
use futures::future::join_all;
use paygate_testkit::DbKind;
use serde_json::json;

/// The `[store]` section and routes for a gateway on Redis under a fresh prefix.
fn redis_config(mock: &Mock, url: &str, prefix: &str, on_unavailable: &str) -> String {
    format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 200\non_unavailable = \"{on_unavailable}\"\n{}",
        routes_for(mock.addr)
    )
}

fn prefix() -> String {
    format!("e2e-{}", uuid::Uuid::now_v7().simple())
}

/// One gateway on the Redis at `url`, under a fresh key prefix. Bind `_dir`:
/// the gateway's ledger lives there.
struct OnRedis {
    _dir: tempfile::TempDir,
    mock: Mock,
    pg: Paygate,
    prefix: String,
}

async fn gateway_on(url: &str, on_unavailable: &str, wait: Wait) -> OnRedis {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let prefix = prefix();
    let cfg = redis_config(&mock, url, &prefix, on_unavailable);
    let pg = Paygate::start_named(dir.path(), "a", &cfg, wait).await;
    OnRedis {
        _dir: dir,
        mock,
        pg,
        prefix,
    }
}

/// Spreads `n` calls over the gateways, all at once; returns the statuses.
async fn spread(gws: &[&Paygate], key: &str, n: usize) -> Vec<u16> {
    let calls = (0..n).map(|i| gws[i % gws.len()].get("/v1/x", key));
    join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_enforce_one_quota_and_one_balance_exactly() {
    // Production mode: the gateways share Redis and a Postgres ledger.
    let dir = Ledger::new(DbKind::Postgres);
    let mock = mock_upstream().await;
    let cfg = redis_config(&mock, &redis_url(), &prefix(), "deny");
    let a = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    let quota_key = a
        .customer_with_plan("q", json!({"quota": {"calls": 40, "period": "month"}}))
        .await;
    let credit_key = a
        .customer_with_plan("k", json!({"price_per_call_micros": 1000}))
        .await;
    let (s, _) = a
        .admin(
            "POST",
            "/admin/v1/customers/k/credits",
            Some(json!({"amount_micros": 25_500, "reference": "r"})),
        )
        .await;
    assert_eq!(s, 201);
    // The second gateway loads the same records and finds the counters live in Redis.
    let b = Paygate::start_named(dir.path(), "b", &cfg, Wait::Ready).await;

    let statuses = spread(&[&a, &b], &quota_key, 160).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 40, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 120);
    a.expect_ledger("q", 40, 0).await;

    let statuses = spread(&[&a, &b], &credit_key, 100).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        25,
        "{statuses:?}"
    );
    a.expect_ledger("k", 25, 0).await;
    let (_, bal) = b.admin("GET", "/admin/v1/customers/k/balance", None).await;
    assert_eq!(bal["credits_micros"], 500, "{bal}");

    // One GCRA bucket too: a burst of 10 and one call a minute after it.
    let rate_key = a
        .customer_with_plan(
            "r",
            json!({"rate_limit": {"requests": 1, "per": "minute", "burst": 10}}),
        )
        .await;
    // The key was made through `a`; `b` learns of it within a second
    // (`/paygate/v1/me` peeks and costs no rate-limit token).
    eventually(
        "gateway b to know the new key",
        Duration::from_secs(5),
        || {
            let (b, key) = (&b, rate_key.clone());
            async move { (b.get("/paygate/v1/me", &key).await.status() == 200).then_some(()) }
        },
    )
    .await;
    let statuses = spread(&[&a, &b], &rate_key, 60).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        50,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_lost_in_redis_are_rebuilt_from_the_ledger() {
    let OnRedis {
        pg, prefix, _dir, ..
    } = gateway_on(&redis_url(), "deny", Wait::Ready).await;
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 10, "period": "month"}}))
        .await;
    for _ in 0..6 {
        assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
    }
    pg.expect_ledger("c", 6, 0).await;
    // Redis loses the customer (as after a restart without persistence).
    on_shared_redis(redis::cmd("DEL").arg(format!("{{{prefix}:c:c}}"))).await;
    // Nobody gets a fresh quota: the call is refused until the counters are back, then
    // the quota continues where the ledger says it is.
    let remaining = eventually(
        "counters to be rebuilt",
        Duration::from_secs(10),
        || async {
            let resp = pg.get("/v1/x", &key).await;
            match resp.status().as_u16() {
                503 => None,
                200 => Some(header(&resp, "x-quota-remaining").unwrap()),
                other => panic!("unexpected {other}"),
            }
        },
    )
    .await;
    assert_eq!(remaining, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_denies_then_recovers_without_restart() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let OnRedis { pg, mock, _dir, .. } = gateway_on(&url, "deny", Wait::Live).await;
    let ready = pg
        .client
        .get(format!("{}/readyz", pg.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready while the store is down");
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 5, "period": "month"}}))
        .await;
    let started = std::time::Instant::now();
    let resp = pg.get("/v1/x", &key).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("1"));
    assert_eq!(error_code(resp).await, "limiter_unavailable");
    assert_eq!(mock.hits(), 0);

    let _redis = RedisServer::start(port);
    eventually(
        "the gateway to recover",
        Duration::from_secs(20),
        || async { (pg.get("/v1/x", &key).await.status() == 200).then_some(()) },
    )
    .await;
    let ready = pg
        .client
        .get(format!("{}/readyz", pg.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    pg.expect_ledger("c", 1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_unavailable_allow_forwards_and_keeps_usage_until_redis_returns() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let OnRedis { pg, _dir, .. } = gateway_on(&url, "allow", Wait::Live).await;
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 1, "period": "month"}}))
        .await;
    for _ in 0..3 {
        assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
    }
    assert!(pg.metrics().await.contains("paygate_store_errors_total 3"));
    // The usage stream is in Redis too: the events wait in the gateway.
    assert_eq!(pg.ledger_counts("c").await, (0, 0));
    assert!(pg.metrics().await.contains("paygate_usage_backlog 3"));
    let _redis = RedisServer::start(port);
    pg.expect_ledger("c", 3, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_reach_every_gateway_within_a_second() {
    // Production mode: the gateways share Redis and a Postgres ledger.
    let dir = Ledger::new(DbKind::Postgres);
    let mock = mock_upstream().await;
    let cfg = redis_config(&mock, &redis_url(), &prefix(), "deny");
    let a = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    let b = Paygate::start_named(dir.path(), "b", &cfg, Wait::Ready).await;
    let within_a_second = Duration::from_secs(1);

    // A customer and key created on A work on B.
    let key = a
        .customer_with_plan("c", json!({"routes": ["get-only"]}))
        .await;
    eventually("the new key on b", within_a_second, || async {
        (b.get("/v1/readonly/x", &key).await.status() == 200).then_some(())
    })
    .await;
    // A plan change on A is in force on B.
    assert_eq!(b.get("/v1/x", &key).await.status(), 403);
    let (s, _) = a
        .admin("PUT", "/admin/v1/plans/plan-c", Some(json!({"name": "all", "rate_limit": {"requests": 100, "per": "second"}, "routes": ["*"]})))
        .await;
    assert_eq!(s, 200);
    eventually("the plan change on b", within_a_second, || async {
        (b.get("/v1/x", &key).await.status() == 200).then_some(())
    })
    .await;
    // A key revoked on A is refused by B.
    let (_, keys) = a.admin("GET", "/admin/v1/customers/c/keys", None).await;
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = a
        .admin("DELETE", &format!("/admin/v1/keys/{key_id}"), None)
        .await;
    assert_eq!(s, 200);
    eventually("the revocation on b", within_a_second, || async {
        (b.get("/v1/x", &key).await.status() == 401).then_some(())
    })
    .await;
    assert_eq!(a.get("/v1/x", &key).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_counters_restores_the_ledger_view() {
    let OnRedis {
        pg, prefix, _dir, ..
    } = gateway_on(&redis_url(), "deny", Wait::Ready).await;
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 10, "period": "month"}}))
        .await;
    for _ in 0..4 {
        assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
    }
    pg.expect_ledger("c", 4, 0).await;
    // Someone (or a bad failover) resets the counter in Redis.
    on_shared_redis(
        redis::cmd("HSET")
            .arg(format!("{{{prefix}:c:c}}"))
            .arg("used")
            .arg(0),
    )
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["billing", "rebuild-counters", "--config"])
        .arg(&pg.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("c: quota used 4"));
    let resp = pg.get("/v1/x", &key).await;
    assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_never_hangs_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let port = free_port();
    let redis = RedisServer::start(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    let cfg = redis_config(&mock, &url, &prefix(), "deny")
        .replace("timeout_ms = 200", "timeout_ms = 100");
    let pg = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    let key = pg.customer_with_plan("c", json!({})).await;
    assert_eq!(pg.get("/v1/x", &key).await.status(), 200);

    Command::new("kill")
        .args(["-STOP", &redis.pid().to_string()])
        .status()
        .unwrap();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let status = pg.get("/v1/x", &key).await.status();
        let took = t.elapsed();
        assert_eq!(status, 503);
        assert!(
            took < Duration::from_millis(100 + 400),
            "a call took {took:?}"
        );
    }
    Command::new("kill")
        .args(["-CONT", &redis.pid().to_string()])
        .status()
        .unwrap();
    eventually("calls to pass again", Duration::from_secs(10), || async {
        (pg.get("/v1/x", &key).await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_spill_file_redis_down_never_blocks_calls_and_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let spill = dir.path().join("usage.spill");
    // A buffer of 8 events: without the spill file the ninth call would wait.
    let cfg = format!(
        "{}\n[usage]\nbuffer = 8\nbatch_size = 4\nflush_interval_ms = 5\nspill_path = \"{}\"\n",
        redis_config(&mock, &url, &prefix(), "allow"),
        spill.display()
    );
    let pg = Paygate::start_named(dir.path(), "a", &cfg, Wait::Live).await;
    let key = pg.customer_with_plan("c", json!({})).await;
    let calls = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..40 {
            assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
        }
    })
    .await;
    assert!(calls.is_ok(), "calls blocked while Redis was down");
    eventually(
        "events in the spill file",
        Duration::from_secs(5),
        || async { (std::fs::metadata(&spill).map(|m| m.len()).unwrap_or(0) > 0).then_some(()) },
    )
    .await;
    let _redis = RedisServer::start(port);
    pg.expect_ledger("c", 40, 0).await;
    eventually(
        "the spill file to be delivered",
        Duration::from_secs(5),
        || async { (!spill.exists()).then_some(()) },
    )
    .await;
}

/// Kills Redis a third of the way through a load and restarts it two thirds
/// through (with AOF, as production runs it); returns (admitted, refused),
/// after checking that the ledger holds every admitted call once.
async fn kill_redis_mid_load(on_unavailable: &str) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let port = free_port();
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let mut redis = RedisServer::start_with_aof(port, &redis_dir);
    let url = format!("redis://127.0.0.1:{port}/0");
    let cfg = redis_config(&mock, &url, &prefix(), on_unavailable);
    eventually("redis to start", Duration::from_secs(10), || async {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let pg = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 100000, "period": "month"}}))
        .await;

    let (mut ok, mut refused) = (0, 0);
    for round in 0..30 {
        if round == 10 {
            redis.kill();
        }
        if round == 20 {
            redis.restart();
        }
        for s in spread(&[&pg], &key, 10).await {
            match s {
                200 => ok += 1,
                503 => refused += 1,
                other => panic!("{on_unavailable}: unexpected {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(
        "calls to pass through Redis again",
        Duration::from_secs(10),
        || async { (pg.get("/v1/x", &key).await.status() == 200).then_some(()) },
    )
    .await;
    // Every admitted call reaches the ledger once, none of the refused ones.
    pg.expect_ledger("c", ok + 1, 0).await;
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_deny_refuses_and_loses_no_admitted_call() {
    let (ok, refused) = kill_redis_mid_load("deny").await;
    assert!(
        refused >= 50,
        "deny refuses while Redis is gone ({refused})"
    );
    assert!(ok >= 100, "everything before the kill passes ({ok})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_allow_serves_everything_and_bills_it_later() {
    let (ok, refused) = kill_redis_mid_load("allow").await;
    assert_eq!((ok, refused), (300, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_local_limits_per_node_and_bills_it_later() {
    let (ok, refused) = kill_redis_mid_load("local").await;
    assert_eq!(
        (ok, refused),
        (300, 0),
        "the plan's limits are generous: the local limiter admits all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_a_three_master_cluster_admit_exactly() {
    let cluster = tokio::task::spawn_blocking(paygate_testkit::RedisCluster::start)
        .await
        .unwrap();
    // Production mode: the gateways share Redis and a Postgres ledger.
    let dir = Ledger::new(DbKind::Postgres);
    let mock = mock_upstream().await;
    let cfg = redis_config(&mock, &cluster.url(), &prefix(), "deny");
    let a = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    // Several customers, so their hashes land on different slots and masters.
    let mut keys = Vec::new();
    for i in 0..4 {
        let id = format!("cl-{i}");
        let key = a
            .customer_with_plan(&id, json!({"quota": {"calls": 15, "period": "month"}}))
            .await;
        keys.push((id, key));
    }
    let b = Paygate::start_named(dir.path(), "b", &cfg, Wait::Ready).await;
    for (id, key) in &keys {
        let statuses = spread(&[&a, &b], key, 60).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            15,
            "{id}: {statuses:?}"
        );
        a.expect_ledger(id, 15, 0).await;
    }
    // Record changes travel through the cluster's pub/sub as well.
    let (_, list) = a.admin("GET", "/admin/v1/customers/cl-0/keys", None).await;
    let key_id = list["data"][0]["id"].as_str().unwrap().to_string();
    a.admin("DELETE", &format!("/admin/v1/keys/{key_id}"), None)
        .await;
    eventually("the revocation on b", Duration::from_secs(1), || async {
        (b.get("/v1/x", &keys[0].1).await.status() == 401).then_some(())
    })
    .await;
}

/// A Redis that lost everything (flushed, then restarted without
/// persistence): every customer's next call waits for its counters to be
/// rebuilt from the ledger instead of failing, the quota continues where
/// the ledger says, and the gateway rebuilds everyone at once and marks the
/// store again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_lost_its_data_is_rebuilt_while_calls_wait_instead_of_failing() {
    const CUSTOMERS: usize = 40;
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    let wait_for_redis = || async {
        eventually("redis to answer", Duration::from_secs(10), || async {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .ok()
                .map(|_| c)
        })
        .await
    };
    wait_for_redis().await;
    let OnRedis {
        pg, prefix, _dir, ..
    } = gateway_on(&url, "deny", Wait::Ready).await;
    let warm = pg.customer_with_plan("warm", json!({})).await;
    let mut keys = Vec::new();
    for i in 0..CUSTOMERS {
        let key = pg
            .customer_with_plan(
                &format!("c{i}"),
                json!({"quota": {"calls": 10, "period": "month"}}),
            )
            .await;
        for _ in 0..3 {
            assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
        }
        keys.push(key);
    }
    for i in 0..CUSTOMERS {
        pg.expect_ledger(&format!("c{i}"), 3, 0).await;
    }
    let epoch_key = format!("{prefix}:epoch");
    let epoch = |mut c: redis::aio::MultiplexedConnection| {
        let k = epoch_key.clone();
        async move {
            redis::cmd("GET")
                .arg(k)
                .query_async::<Option<String>>(&mut c)
                .await
                .unwrap()
        }
    };
    assert!(
        epoch(wait_for_redis().await).await.is_some(),
        "no epoch marker after start"
    );

    // Every customer calls at once: none is refused, none gets a fresh quota.
    let everyone_calls = |remaining: &'static str| {
        let (pg, keys) = (&pg, &keys);
        async move {
            let answers = join_all(keys.iter().map(|k| pg.get("/v1/x", k))).await;
            for a in answers {
                assert_eq!(a.status(), 200, "a call failed while counters were rebuilt");
                assert_eq!(header(&a, "x-quota-remaining").as_deref(), Some(remaining));
            }
        }
    };

    // 1. Flushed while connected.
    let mut c = wait_for_redis().await;
    redis::cmd("FLUSHALL")
        .query_async::<String>(&mut c)
        .await
        .unwrap();
    everyone_calls("6").await;
    // The whole store is rebuilt and marked again, once.
    eventually(
        "the store rebuilt and marked",
        Duration::from_secs(10),
        || async {
            let marked = epoch(wait_for_redis().await).await.is_some();
            let rebuilds = pg.metric("paygate_store_rebuilds_total").await;
            (marked && rebuilds >= 1.0).then_some(())
        },
    )
    .await;

    // 2. Restarted without persistence: empty again. (Usage still in the
    // stream would go with it: wait until the ledger holds it.)
    for i in 0..CUSTOMERS {
        pg.expect_ledger(&format!("c{i}"), 4, 0).await;
    }
    redis.kill();
    redis.restart();
    wait_for_redis().await;
    // A call on a connection that broke with the restart fails (it may
    // have run, so it is not sent again): a few, one per connection. Those
    // are refused, not counted; every customer's next call continues from
    // the ledger.
    eventually(
        "the gateway to reach redis again",
        Duration::from_secs(10),
        || async {
            let r = pg.get("/v1/x", &warm).await;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let answers = join_all(keys.iter().map(|k| pg.get("/v1/x", k))).await;
    let mut broken = 0;
    for (key, a) in keys.iter().zip(answers) {
        let a = match a.status().as_u16() {
            200 => a,
            503 => {
                broken += 1;
                pg.get("/v1/x", key).await
            }
            other => panic!("unexpected {other}"),
        };
        assert_eq!(a.status(), 200);
        assert_eq!(header(&a, "x-quota-remaining").as_deref(), Some("5"));
    }
    assert!(broken <= 4, "{broken} calls failed after the restart");
    for i in 0..CUSTOMERS {
        pg.expect_ledger(&format!("c{i}"), 5, 0).await;
    }
    eventually("marked again", Duration::from_secs(10), || async {
        epoch(wait_for_redis().await).await.map(|_| ())
    })
    .await;
}
