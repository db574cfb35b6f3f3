//! What only `RedisStore` has: a Redis that is not there. What every store
//! does, on Redis and Redis Cluster too, is asserted by `contract.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use paygate_store::{Limits, RedisStore, Store, StoreError};

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
    let l = Limits {
        emission_interval_ns: 1_000,
        capacity: 1_000_000,
        units: 1,
        quota: None,
        credit_price_micros: None,
    };
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
