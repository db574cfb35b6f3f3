//! `RedisStore` on a 3-master Redis Cluster started by the test on free ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate_store::{Counters, Decision, Limits, QuotaLimit, RedisStore, SeedMode, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_and_credits_are_exact_on_a_three_master_cluster() {
    let cluster = paygate_testkit::RedisCluster::start();
    let url = cluster.url();
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
