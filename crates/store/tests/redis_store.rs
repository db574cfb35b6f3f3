//! `RedisStore` against a real Redis (127.0.0.1:6379, or `PAYGATE_TEST_REDIS_URL`),
//! one key prefix per test; and against a Redis that is not there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate_store::{
    Counters, Decision, Limits, QuotaLimit, RedisStore, SeedMode, Store, StoreError, WebsocketSlot,
};

fn url() -> String {
    std::env::var("PAYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn store() -> Arc<RedisStore> {
    let prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
    Arc::new(RedisStore::connect(&url(), &prefix, Duration::from_millis(500)).unwrap())
}

fn limits(quota: Option<QuotaLimit>, price: Option<i64>) -> Limits {
    Limits {
        emission_interval_ns: 1_000,
        capacity: 1_000_000,
        units: 1,
        quota,
        credit_price_micros: price,
    }
}

fn quota(limit: u64, period_start: i64, overage: Option<i64>) -> Option<QuotaLimit> {
    Some(QuotaLimit {
        limit,
        period_start,
        overage_price_micros: overage,
    })
}

async fn seeded(s: &RedisStore, customer: &str, credits: i64) {
    let c = Counters {
        credits_micros: credits,
        quota_used: 0,
        period_start: 100,
    };
    assert!(s.seed(customer, c, SeedMode::IfAbsent).await.unwrap());
}

async fn admitted(s: Arc<RedisStore>, l: Limits, n: usize) -> usize {
    let calls = (0..n).map(|_| {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.admit("c", &l).await.unwrap().decision })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .filter(|d| matches!(d, Ok(Decision::Admitted(_))))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_is_exact_under_concurrency() {
    let s = store();
    seeded(&s, "c", 0).await;
    assert_eq!(
        admitted(Arc::clone(&s), limits(quota(50, 100, None), None), 200).await,
        50
    );
    let snap = s
        .peek("c", &limits(quota(50, 100, None), None))
        .await
        .unwrap();
    assert_eq!(snap.quota_used, 50);
    // A new period starts from zero.
    assert_eq!(
        s.peek("c", &limits(quota(50, 200, None), None))
            .await
            .unwrap()
            .quota_used,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credits_are_exact_and_never_negative() {
    let s = store();
    seeded(&s, "c", 17 * 1000 + 999).await;
    assert_eq!(
        admitted(Arc::clone(&s), limits(None, Some(1000)), 60).await,
        17
    );
    assert_eq!(s.add_credits("c", 0).await.unwrap(), 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcra_admits_the_burst_then_refuses_with_retry_after() {
    let s = store();
    seeded(&s, "c", 0).await;
    let l = Limits {
        emission_interval_ns: 10_000_000_000,
        capacity: 5,
        ..limits(None, None)
    };
    assert_eq!(admitted(Arc::clone(&s), l, 30).await, 5);
    let a = s.admit("c", &l).await.unwrap();
    match a.decision {
        Decision::RateLimited { retry_after_ms } => {
            assert!(
                retry_after_ms > 0 && retry_after_ms <= 10_000,
                "{retry_after_ms}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.snapshot.rate_remaining, 0);
}

#[tokio::test]
async fn overage_give_back_and_websockets() {
    let s = store();
    seeded(&s, "c", 500).await;
    let l = limits(quota(1, 100, Some(200)), Some(100));
    let mut rs = vec![];
    for _ in 0..2 {
        match s.admit("c", &l).await.unwrap().decision {
            Decision::Admitted(r) => rs.push(r),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rs[0].amount_micros(), 100);
    assert_eq!((rs[1].overage_units, rs[1].amount_micros()), (1, 300));
    s.give_back("c", &rs[1]).await.unwrap();
    let snap = s.peek("c", &l).await.unwrap();
    assert_eq!((snap.quota_used, snap.credits_micros), (1, 400));

    assert_eq!(
        s.open_websocket("c", 1).await.unwrap(),
        WebsocketSlot::Granted
    );
    assert_eq!(s.open_websocket("c", 1).await.unwrap(), WebsocketSlot::Full);
    s.close_websocket("c").await.unwrap();
    assert_eq!(
        s.open_websocket("c", 1).await.unwrap(),
        WebsocketSlot::Granted
    );
}

#[tokio::test]
async fn unseeded_customers_are_not_decided_and_seeding_respects_mode() {
    let s = store();
    let l = limits(quota(10, 100, None), None);
    assert!(matches!(s.admit("c", &l).await, Err(StoreError::NotSeeded)));
    assert!(matches!(
        s.add_credits("c", 5).await,
        Err(StoreError::NotSeeded)
    ));
    let c = Counters {
        credits_micros: 7,
        quota_used: 3,
        period_start: 100,
    };
    assert!(s.seed("c", c, SeedMode::IfAbsent).await.unwrap());
    let again = Counters { quota_used: 9, ..c };
    assert!(
        !s.seed("c", again, SeedMode::IfAbsent).await.unwrap(),
        "live counters win"
    );
    assert_eq!(s.peek("c", &l).await.unwrap().quota_used, 3);
    assert!(s.seed("c", again, SeedMode::Overwrite).await.unwrap());
    assert_eq!(s.peek("c", &l).await.unwrap().quota_used, 9);
}

#[tokio::test]
async fn a_dead_redis_fails_fast_once_the_breaker_opens() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = RedisStore::connect(
        &format!("redis://127.0.0.1:{port}/0"),
        "dead",
        Duration::from_millis(50),
    )
    .unwrap();
    let l = limits(None, None);
    for _ in 0..3 {
        let t = Instant::now();
        assert!(s.admit("c", &l).await.is_err());
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
    }
    let t = Instant::now();
    for _ in 0..100 {
        assert!(matches!(
            s.admit("c", &l).await,
            Err(StoreError::Unavailable(_))
        ));
    }
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "open breaker took {:?}",
        t.elapsed()
    );
    assert!(s.ping().await.is_err());
}
