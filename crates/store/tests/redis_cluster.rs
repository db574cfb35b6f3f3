//! `RedisStore` on a 3-master Redis Cluster started by the test on free ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate_store::{Counters, Decision, Limits, QuotaLimit, RedisStore, SeedMode, Store};

/// A free port whose cluster-bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

struct Cluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| cluster_port()).collect();
    let nodes = ports
        .iter()
        .map(|p| {
            Command::new("redis-server")
                .args([
                    "--port",
                    &p.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                ])
                .args([
                    "--cluster-config-file",
                    &format!("nodes-{p}.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server on PATH")
        })
        .collect();
    let cluster = Cluster {
        nodes,
        ports,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in &cluster.ports {
        while !Command::new("redis-cli")
            .args(["-p", &p.to_string(), "ping"])
            .output()
            .unwrap()
            .stdout
            .starts_with(b"PONG")
        {
            assert!(Instant::now() < deadline, "node {p} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let addrs: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for p in &cluster.ports {
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &p.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not converge");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_and_credits_are_exact_on_a_three_master_cluster() {
    let cluster = start_cluster();
    let url = format!(
        "redis+cluster://{}",
        cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let store = Arc::new(RedisStore::connect(&url, "cl", Duration::from_millis(500)).unwrap());
    // Customers land on different slots; each one's script runs on its own slot.
    let customers: Vec<String> = (0..6).map(|i| format!("cust-{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for c in &customers {
        let counters = Counters {
            credits_micros: 10_000,
            quota_used: 0,
            period_start: 100,
        };
        loop {
            match store.seed(c, counters, SeedMode::IfAbsent).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cluster connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let limits = Limits {
        emission_interval_ns: 1_000,
        capacity: 1_000_000,
        units: 1,
        quota: Some(QuotaLimit {
            limit: 20,
            period_start: 100,
            overage_price_micros: None,
        }),
        credit_price_micros: Some(1_000),
    };
    let calls = customers.iter().flat_map(|c| {
        (0..40).map(|_| {
            let (store, c) = (Arc::clone(&store), c.clone());
            tokio::spawn(
                async move { (c.clone(), store.admit(&c, &limits).await.unwrap().decision) },
            )
        })
    });
    let results = futures::future::join_all(calls).await;
    for c in &customers {
        let admitted = results
            .iter()
            .filter(|r| matches!(r.as_ref().unwrap(), (id, Decision::Admitted(_)) if id == c))
            .count();
        // Credits allow 10 calls, the quota 20: credits bind.
        assert_eq!(admitted, 10, "{c}");
        let snap = store.peek(c, &limits).await.unwrap();
        assert_eq!((snap.quota_used, snap.credits_micros), (10, 0), "{c}");
    }
}
