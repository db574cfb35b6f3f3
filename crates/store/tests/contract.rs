//! The `Store` contract: every behaviour of the trait, asserted once and run
//! against each backend, as `memory::<case>`, `redis::<case>` (the shared test
//! Redis, 127.0.0.1:6379 or `PAYGATE_TEST_REDIS_URL`, one key prefix per test),
//! `redis_tls::<case>` (a TLS-only `redis-server` per test process, reached
//! over `rediss://` and verified against the test's own CA) and
//! `cluster::<case>` (one 3-master Redis Cluster per test process).
//!
//! Where the backends differ on purpose, the case reads a capability flag of
//! [`Backend`] and asserts what that backend does; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use paygate_core::Micros;
use paygate_store::{
    Admission, Counters, Decision, Limits, MemoryStore, PaymentClaim, QuotaLimit, RedisEndpoint,
    RedisStore, Reservation, SeedMode, Snapshot, Store, StoreError, WebsocketSlot,
    WEBSOCKET_LEASE_MS,
};
use paygate_testkit::tls::Pki;
use paygate_testkit::{RedisCluster, RedisServer};

/// One store under test and what it does where the backends differ.
pub struct Backend {
    store: Arc<dyn Store>,
    /// A customer the store holds no seeded counters for is refused with
    /// `NotSeeded` by `admit`, `peek` and `add_credits`, and `give_back`
    /// writes nothing for it: a Redis that was emptied must not hand out a
    /// fresh quota. The memory store lives and dies with the gateway process,
    /// which seeds it at start-up, so it has no such state: an unknown
    /// customer starts from zero counters and every call answers.
    refuses_unseeded: bool,
}

/// Deadline for one store call; generous, these tests are not about deadlines.
const TIMEOUT: Duration = Duration::from_secs(2);

impl Backend {
    async fn memory() -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            refuses_unseeded: false,
        }
    }

    async fn redis() -> Self {
        let url = std::env::var("PAYGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        Self::on_redis(&url).await
    }

    async fn cluster() -> Self {
        let url = tokio::task::spawn_blocking(|| CLUSTER.url.clone())
            .await
            .unwrap();
        Self::on_redis(RedisEndpoint::new(url)).await
    }

    async fn redis_tls() -> Self {
        let endpoint = tokio::task::spawn_blocking(|| TLS_REDIS.endpoint.clone())
            .await
            .unwrap();
        Self::on_redis(endpoint).await
    }

    /// A store with a key prefix of its own, once it answers: the cluster
    /// connection is made in the background after `connect` returns. `ping`
    /// does not go through the circuit breaker, so waiting does not open it.
    async fn on_redis(endpoint: impl Into<RedisEndpoint>) -> Self {
        let endpoint = endpoint.into();
        let prefix = format!("contract-{}", uuid::Uuid::now_v7().simple());
        let store = RedisStore::connect(&endpoint, &prefix, TIMEOUT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = store.ping().await {
            assert!(
                Instant::now() < deadline,
                "{} not reachable: {e}",
                endpoint.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            store: Arc::new(store),
            refuses_unseeded: true,
        }
    }
}

/// The cluster all `cluster::*` tests of this process share. A static is
/// never dropped, so `RedisCluster`'s drop (which kills the nodes) never
/// runs: a reaper process shuts the nodes down and removes their directory
/// when this process is gone, also when it is killed. (Killed while the
/// cluster is still being created, before the reaper exists, it leaves the
/// nodes running.)
struct SharedCluster {
    url: String,
    _cluster: RedisCluster,
    _reaper: Child,
}

static CLUSTER: LazyLock<SharedCluster> = LazyLock::new(|| {
    let cluster = RedisCluster::start();
    let info = |port: u16, args: &[&str]| {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pids: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| {
            info(*p, &["info", "server"])
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .expect("process_id in INFO server")
                .trim()
                .to_owned()
        })
        .collect();
    // The nodes' working directory, the testkit's temporary directory: the
    // reaper removes it too, only if it is one.
    let dir = info(cluster.ports[0], &["config", "get", "dir"])
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let dir = if std::path::Path::new(&dir).starts_with(std::env::temp_dir()) {
        dir
    } else {
        String::new()
    };
    SharedCluster {
        url: cluster.url(),
        _cluster: cluster,
        _reaper: reaper(&pids, &dir),
    }
});

/// The TLS-only Redis all `redis_tls::*` tests of this process share, with
/// the CA that signed its certificate; reaped like [`CLUSTER`].
struct SharedTlsRedis {
    endpoint: RedisEndpoint,
    _server: RedisServer,
    _pki: Pki,
    _reaper: Child,
}

static TLS_REDIS: LazyLock<SharedTlsRedis> = LazyLock::new(|| {
    let pki = Pki::new("redis");
    let files = pki.issue("redis", &["localhost", "127.0.0.1"]);
    let port = paygate_testkit::cluster_port();
    let server = RedisServer::start_tls(port, files);
    let endpoint = RedisEndpoint::new(format!("rediss://localhost:{port}/0"))
        .with_root_ca(std::fs::read(&pki.ca_path).unwrap());
    let dir = pki.dir().display().to_string();
    SharedTlsRedis {
        endpoint,
        _reaper: reaper(&[server.pid().to_string()], &dir),
        _server: server,
        _pki: pki,
    }
});

/// A process that stops `pids` (SIGTERM: no persistence, nothing to save)
/// and removes `dir` when this test process is gone, however it ends.
fn reaper(pids: &[String], dir: &str) -> Child {
    // `read` returns at end of input: when the write end of its stdin, held
    // by this process (and, close-on-exec, by no other), is closed, which
    // the kernel does when this process ends however it ends.
    let script = r#"
        read -r _
        for pid in $PIDS; do kill "$pid" 2>/dev/null; done
        for pid in $PIDS; do
            n=0
            while s=$(ps -o stat= -p "$pid") && [ "${s#Z}" = "$s" ] && [ "$n" -lt 100 ]; do
                sleep 0.05; n=$((n + 1))
            done
        done
        [ -n "$DIR" ] && rm -rf -- "$DIR"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PIDS", pids.join(" "))
        .env("DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Generates one test per case per backend: `memory::<case>`,
/// `redis::<case>`, `cluster::<case>`. Each case gets its name as the prefix
/// of its customer ids, so cases never share a customer.
macro_rules! contract_tests {
    (backends: [$($backend:ident),* $(,)?], cases: $cases:tt) => {
        $( contract_tests!(@backend $backend $cases); )*
    };
    (@backend $backend:ident [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = super::Backend::$backend().await;
                    super::cases::$case(&backend, stringify!($case)).await;
                }
            )*
        }
    };
}

contract_tests! {
    backends: [memory, redis, redis_tls, cluster],
    cases: [
        rate_limit_admits_the_burst_then_refuses,
        rate_limit_refills_over_time,
        quota_admits_exactly_the_limit,
        quota_is_exact_under_concurrency,
        overage_is_priced_past_the_quota,
        new_period_resets_the_quota,
        a_lagging_clock_never_moves_the_period_back,
        credits_are_exact_and_never_negative,
        credits_are_exact_under_concurrency,
        quota_and_credits_together,
        refusals_reserve_nothing,
        give_back_restores_quota_and_credits,
        give_back_skips_units_of_an_ended_period,
        peek_reserves_nothing,
        add_credits_returns_the_new_balance,
        seed_respects_the_mode,
        unseeded_customers,
        websocket_slots_are_bounded,
        websocket_leases_expire_unless_renewed,
        spending_without_a_rate_limit,
        a_payment_is_claimed_once,
        ping,
    ]
}

/// A period start (Unix seconds) and the one after it.
const P: i64 = 1_700_000_000;
const NEXT_P: i64 = P + 2_592_000;

/// No limit binds: a bucket of a million calls, no quota, no price.
fn open() -> Limits {
    Limits {
        emission_interval_ns: 1_000_000,
        capacity: 1_000_000,
        units: 1,
        quota: None,
        credit_price_micros: None,
    }
}

/// A bucket that refills too slowly to matter during a test: its snapshot's
/// `rate_remaining` does not move between two calls.
fn slow_bucket(capacity: u32) -> Limits {
    Limits {
        emission_interval_ns: 1_000_000_000_000,
        capacity,
        ..open()
    }
}

fn quota(limit: u64, period_start: i64, overage: Option<Micros>) -> Option<QuotaLimit> {
    Some(QuotaLimit {
        limit,
        period_start,
        overage_price_micros: overage,
    })
}

async fn seed(b: &Backend, customer: &str, credits_micros: Micros, quota_used: u64) {
    let c = Counters {
        credits_micros,
        quota_used,
        period_start: P,
    };
    assert!(
        b.store.seed(customer, c, SeedMode::IfAbsent).await.unwrap(),
        "{customer} was seeded before"
    );
}

async fn admit(b: &Backend, customer: &str, l: &Limits) -> Admission {
    b.store.admit(customer, l).await.unwrap()
}

async fn peek(b: &Backend, customer: &str, l: &Limits) -> Snapshot {
    b.store.peek(customer, l).await.unwrap()
}

fn reservation(a: &Admission) -> Reservation {
    match a.decision {
        Decision::Admitted(r) => r,
        other => panic!("refused: {other:?} ({:?})", a.snapshot),
    }
}

/// `n` admits of `customer` at once, each on its own task.
async fn admit_concurrently(b: &Backend, customer: &str, l: Limits, n: usize) -> Vec<Admission> {
    let calls = (0..n).map(|_| {
        let (store, customer) = (Arc::clone(&b.store), customer.to_owned());
        tokio::spawn(async move { store.admit(&customer, &l).await.unwrap() })
    });
    futures::future::try_join_all(calls).await.unwrap()
}

/// `n` WebSocket opens of `customer` at once; how many were granted.
async fn open_many(b: &Backend, customer: &str, n: usize, max: u32) -> usize {
    let opens = (0..n).map(|_| {
        let (store, customer) = (Arc::clone(&b.store), customer.to_owned());
        let lease = uuid::Uuid::now_v7().to_string();
        tokio::spawn(async move {
            store
                .open_websocket(&customer, &lease, max, WEBSOCKET_LEASE_MS)
                .await
                .unwrap()
        })
    });
    futures::future::try_join_all(opens)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| *s == WebsocketSlot::Granted)
        .count()
}

fn admitted(admissions: &[Admission]) -> usize {
    admissions
        .iter()
        .filter(|a| matches!(a.decision, Decision::Admitted(_)))
        .count()
}

fn quota_used_and_credits(s: Snapshot) -> (u64, Micros) {
    (s.quota_used, s.credits_micros)
}

mod cases {
    use super::*;

    pub async fn rate_limit_admits_the_burst_then_refuses(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 0, 0).await;
        let l = Limits {
            emission_interval_ns: 10_000_000_000,
            capacity: 5,
            ..open()
        };
        let burst = admit_concurrently(b, &c, l, 30).await;
        assert_eq!(admitted(&burst), 5);
        for a in &burst {
            if !matches!(a.decision, Decision::Admitted(_)) {
                assert!(matches!(a.decision, Decision::RateLimited { .. }), "{a:?}");
            }
        }
        let a = admit(b, &c, &l).await;
        match a.decision {
            Decision::RateLimited { retry_after_ms } => assert!(
                retry_after_ms > 0 && retry_after_ms <= 10_000,
                "{retry_after_ms}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.snapshot.rate_remaining, 0);
        assert!(
            a.snapshot.rate_reset_ms > 40_000 && a.snapshot.rate_reset_ms <= 50_000,
            "{:?}",
            a.snapshot
        );
    }

    pub async fn rate_limit_refills_over_time(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 0, 0).await;
        let l = Limits {
            emission_interval_ns: 100_000_000,
            capacity: 2,
            ..open()
        };
        for _ in 0..2 {
            reservation(&admit(b, &c, &l).await);
        }
        let a = admit(b, &c, &l).await;
        let Decision::RateLimited { retry_after_ms } = a.decision else {
            panic!("third call of a burst of 2: {a:?}")
        };
        assert!(
            retry_after_ms > 0 && retry_after_ms <= 100,
            "{retry_after_ms}"
        );
        // One emission interval after the burst, one more call conforms.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut wait = retry_after_ms;
        loop {
            tokio::time::sleep(Duration::from_millis(wait.clamp(1, 100))).await;
            match admit(b, &c, &l).await.decision {
                Decision::Admitted(_) => break,
                Decision::RateLimited { retry_after_ms } => {
                    assert!(Instant::now() < deadline, "the bucket did not refill");
                    wait = retry_after_ms;
                }
                other => panic!("{other:?}"),
            }
        }
        // Left idle, the bucket fills up to its capacity.
        loop {
            let s = peek(b, &c, &l).await;
            if s.rate_remaining == 2 {
                assert_eq!(s.rate_reset_ms, 0);
                break;
            }
            assert!(Instant::now() < deadline, "the bucket did not fill: {s:?}");
            tokio::time::sleep(Duration::from_millis(s.rate_reset_ms.clamp(1, 100))).await;
        }
    }

    pub async fn quota_admits_exactly_the_limit(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 0, 0).await;
        let l = Limits {
            quota: quota(10, P, None),
            ..open()
        };
        for i in 1..=10 {
            let a = admit(b, &c, &l).await;
            let r = reservation(&a);
            assert_eq!(
                r,
                Reservation {
                    quota_units: 1,
                    period_start: P,
                    ..Reservation::default()
                }
            );
            assert_eq!(a.snapshot.quota_used, i);
        }
        let a = admit(b, &c, &l).await;
        assert_eq!(a.decision, Decision::QuotaExhausted);
        assert_eq!(a.snapshot.quota_used, 10);

        // A call costing several units is refused whole when it does not fit.
        let c = format!("{case}-units");
        seed(b, &c, 0, 0).await;
        let l = Limits {
            units: 4,
            quota: quota(10, P, None),
            ..open()
        };
        for _ in 0..2 {
            assert_eq!(reservation(&admit(b, &c, &l).await).quota_units, 4);
        }
        let a = admit(b, &c, &l).await;
        assert_eq!(a.decision, Decision::QuotaExhausted);
        assert_eq!(a.snapshot.quota_used, 8);
        let a = admit(b, &c, &Limits { units: 2, ..l }).await;
        assert_eq!(reservation(&a).quota_units, 2);
        assert_eq!(a.snapshot.quota_used, 10);
    }

    pub async fn quota_is_exact_under_concurrency(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 0, 0).await;
        let l = Limits {
            quota: quota(100, P, None),
            ..open()
        };
        let all = admit_concurrently(b, &c, l, 200).await;
        assert_eq!(admitted(&all), 100);
        for a in all
            .iter()
            .filter(|a| a.decision != Decision::QuotaExhausted)
        {
            assert!(matches!(a.decision, Decision::Admitted(_)), "{a:?}");
        }
        for a in all
            .iter()
            .filter(|a| a.decision == Decision::QuotaExhausted)
        {
            assert_eq!(a.snapshot.quota_used, 100);
        }
        assert_eq!(peek(b, &c, &l).await.quota_used, 100);
    }

    pub async fn overage_is_priced_past_the_quota(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 0, 0).await;
        let l = Limits {
            quota: quota(2, P, Some(200)),
            ..open()
        };
        let mut rs = vec![];
        for _ in 0..3 {
            rs.push(reservation(&admit(b, &c, &l).await));
        }
        let amounts: Vec<Micros> = rs.iter().map(Reservation::amount_micros).collect();
        assert_eq!(amounts, vec![0, 0, 200]);
        assert_eq!(
            rs[2],
            Reservation {
                quota_units: 1,
                overage_units: 1,
                overage_micros: 200,
                credits_micros: 0,
                period_start: P,
            }
        );
        // Past the quota, every unit of a call is overage.
        let a = admit(b, &c, &Limits { units: 3, ..l }).await;
        let r = reservation(&a);
        assert_eq!(
            (r.quota_units, r.overage_units, r.overage_micros),
            (3, 3, 600)
        );
        assert_eq!(a.snapshot.quota_used, 6);

        // A call straddling the limit pays overage for the units past it only.
        let c = format!("{case}-straddle");
        seed(b, &c, 0, 0).await;
        reservation(&admit(b, &c, &l).await);
        let r = reservation(&admit(b, &c, &Limits { units: 3, ..l }).await);
        assert_eq!(
            (r.quota_units, r.overage_units, r.overage_micros),
            (3, 2, 400)
        );

        // With a price per call too, the amount is overage plus credits.
        let c = format!("{case}-credits");
        seed(b, &c, 500, 0).await;
        let l = Limits {
            quota: quota(1, P, Some(200)),
            credit_price_micros: Some(100),
            ..open()
        };
        let first = reservation(&admit(b, &c, &l).await);
        assert_eq!((first.overage_units, first.amount_micros()), (0, 100));
        let a = admit(b, &c, &l).await;
        let second = reservation(&a);
        assert_eq!(
            (
                second.overage_units,
                second.credits_micros,
                second.amount_micros()
            ),
            (1, 100, 300)
        );
        // Overage is billed, not taken from the credits.
        assert_eq!(quota_used_and_credits(a.snapshot), (2, 300));
    }

    pub async fn new_period_resets_the_quota(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 0, 0).await;
        let this = Limits {
            quota: quota(2, P, None),
            ..open()
        };
        for _ in 0..2 {
            reservation(&admit(b, &c, &this).await);
        }
        assert_eq!(admit(b, &c, &this).await.decision, Decision::QuotaExhausted);
        let next = Limits {
            quota: quota(2, NEXT_P, None),
            ..open()
        };
        assert_eq!(peek(b, &c, &next).await.quota_used, 0);
        for used in 1..=2 {
            let a = admit(b, &c, &next).await;
            assert_eq!(reservation(&a).period_start, NEXT_P);
            assert_eq!(a.snapshot.quota_used, used);
        }
        let a = admit(b, &c, &next).await;
        assert_eq!(a.decision, Decision::QuotaExhausted);
        assert_eq!(a.snapshot.quota_used, 2);
    }

    /// Gateways' clocks differ: a peek dated in the next period changes
    /// nothing, and a call dated in the previous period, once the counter
    /// moved on, counts in the counter's period and is given back there.
    pub async fn a_lagging_clock_never_moves_the_period_back(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 0, 0).await;
        let this = Limits {
            quota: quota(5, P, None),
            ..open()
        };
        let next = Limits {
            quota: quota(5, NEXT_P, None),
            ..open()
        };
        reservation(&admit(b, &c, &this).await);
        // A peek from a gateway already in the next period: nothing used
        // there yet, and nothing written.
        assert_eq!(peek(b, &c, &next).await.quota_used, 0);
        assert_eq!(peek(b, &c, &this).await.quota_used, 1);
        // The counter moves on with the first call of the next period...
        let a = admit(b, &c, &next).await;
        assert_eq!(reservation(&a).period_start, NEXT_P);
        assert_eq!(a.snapshot.quota_used, 1);
        // ...and a call from a gateway still in the last one counts there too.
        let late = admit(b, &c, &this).await;
        let r = reservation(&late);
        assert_eq!(r.period_start, NEXT_P, "reported in the counter's period");
        assert_eq!(late.snapshot.quota_used, 2);
        b.store.give_back(&c, &r).await.unwrap();
        assert_eq!(
            peek(b, &c, &next).await.quota_used,
            1,
            "given back where counted"
        );
    }

    pub async fn credits_are_exact_and_never_negative(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 50, 0).await;
        let l = Limits {
            credit_price_micros: Some(17),
            ..open()
        };
        for left in [33, 16] {
            let a = admit(b, &c, &l).await;
            assert_eq!(reservation(&a).credits_micros, 17);
            assert_eq!(a.snapshot.credits_micros, left);
        }
        for _ in 0..3 {
            let a = admit(b, &c, &l).await;
            assert_eq!(a.decision, Decision::InsufficientCredits);
            assert_eq!(a.snapshot.credits_micros, 16);
        }
        assert_eq!(peek(b, &c, &l).await.credits_micros, 16);
    }

    pub async fn credits_are_exact_under_concurrency(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        // Credit for 17 calls, and some change.
        seed(b, &c, 17 * 1000 + 999, 0).await;
        let l = Limits {
            credit_price_micros: Some(1000),
            ..open()
        };
        let all = admit_concurrently(b, &c, l, 60).await;
        assert_eq!(admitted(&all), 17);
        for a in &all {
            match a.decision {
                Decision::Admitted(r) => assert_eq!(r.credits_micros, 1000),
                Decision::InsufficientCredits => assert_eq!(a.snapshot.credits_micros, 999),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(b.store.add_credits(&c, 0).await.unwrap(), 999);
    }

    pub async fn quota_and_credits_together(b: &Backend, case: &str) {
        // Several customers at once (on a cluster: on several slots, each
        // customer's calls decided on its own slot). Credits allow 10 calls,
        // the quota 20: credits bind.
        let l = Limits {
            quota: quota(20, P, None),
            credit_price_micros: Some(1_000),
            ..open()
        };
        let customers: Vec<String> = (0..6).map(|i| format!("{case}-{i}")).collect();
        for c in &customers {
            seed(b, c, 10_000, 0).await;
        }
        let runs = customers
            .iter()
            .map(|c| async move { admit_concurrently(b, c, l, 40).await });
        let results = futures::future::join_all(runs).await;
        for (c, all) in customers.iter().zip(&results) {
            assert_eq!(admitted(all), 10, "{c}");
            for a in all {
                match a.decision {
                    Decision::Admitted(r) => {
                        assert_eq!((r.quota_units, r.credits_micros), (1, 1_000), "{c}")
                    }
                    other => assert_eq!(other, Decision::InsufficientCredits, "{c}"),
                }
            }
            assert_eq!(quota_used_and_credits(peek(b, c, &l).await), (10, 0), "{c}");
        }

        // The quota binds before the credits run out: credits are left.
        let c = format!("{case}-quota-binds");
        seed(b, &c, 10_000, 0).await;
        let l = Limits {
            quota: quota(5, P, None),
            ..l
        };
        let all = admit_concurrently(b, &c, l, 20).await;
        assert_eq!(admitted(&all), 5);
        assert!(all
            .iter()
            .all(|a| matches!(a.decision, Decision::Admitted(_) | Decision::QuotaExhausted)));
        assert_eq!(
            quota_used_and_credits(peek(b, &c, &l).await),
            (5, 10_000 - 5 * 1_000)
        );

        // Refused on both counts: the quota is named.
        let c = format!("{case}-both");
        seed(b, &c, 0, 5).await;
        assert_eq!(admit(b, &c, &l).await.decision, Decision::QuotaExhausted);
    }

    pub async fn refusals_reserve_nothing(b: &Backend, case: &str) {
        /// One kind of refusal: how the customer gets there, and what every
        /// refused call and a peek after it must show (rate remaining,
        /// quota used, credits): exactly what the admitted calls took.
        struct Scenario {
            name: &'static str,
            credits: Micros,
            quota: u64,
            bucket: u32,
            admitted_first: usize,
            refused: fn(&Decision) -> bool,
            stands: (u32, u64, Micros),
        }
        let scenarios = [
            // Rate limited: neither quota nor credits are taken.
            Scenario {
                name: "rate",
                credits: 100,
                quota: 10,
                bucket: 1,
                admitted_first: 1,
                refused: |d| {
                    matches!(d, Decision::RateLimited { retry_after_ms }
                        if *retry_after_ms > 0 && *retry_after_ms <= 1_000_000)
                },
                stands: (0, 1, 90),
            },
            // Out of quota: the rate limit and the credits are not taken.
            Scenario {
                name: "quota",
                credits: 100,
                quota: 1,
                bucket: 100,
                admitted_first: 1,
                refused: |d| *d == Decision::QuotaExhausted,
                stands: (99, 1, 90),
            },
            // Out of credits: the rate limit and the quota are not taken.
            Scenario {
                name: "credits",
                credits: 5,
                quota: 10,
                bucket: 100,
                admitted_first: 0,
                refused: |d| *d == Decision::InsufficientCredits,
                stands: (100, 0, 5),
            },
        ];
        let limits = |s: &Scenario| Limits {
            quota: quota(s.quota, P, None),
            credit_price_micros: Some(10),
            ..slow_bucket(s.bucket)
        };
        for s in &scenarios {
            let c = format!("{case}-{}", s.name);
            seed(b, &c, s.credits, 0).await;
            let l = limits(s);
            for _ in 0..s.admitted_first {
                reservation(&admit(b, &c, &l).await);
            }
            for _ in 0..3 {
                let a = admit(b, &c, &l).await;
                assert!((s.refused)(&a.decision), "{}: {a:?}", s.name);
                for snap in [a.snapshot, peek(b, &c, &l).await] {
                    assert_eq!(
                        (snap.rate_remaining, snap.quota_used, snap.credits_micros),
                        s.stands,
                        "{}",
                        s.name
                    );
                }
            }
        }
        // Once paid for, the call goes through on an untouched bucket and quota.
        let c = format!("{case}-credits");
        b.store.add_credits(&c, 5).await.unwrap();
        let a = admit(b, &c, &limits(&scenarios[2])).await;
        reservation(&a);
        assert_eq!(
            (
                a.snapshot.rate_remaining,
                a.snapshot.quota_used,
                a.snapshot.credits_micros
            ),
            (99, 1, 0)
        );
    }

    pub async fn give_back_restores_quota_and_credits(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 1_000, 0).await;
        let l = Limits {
            quota: quota(5, P, None),
            credit_price_micros: Some(100),
            ..open()
        };
        let r = reservation(&admit(b, &c, &l).await);
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (1, 900));
        b.store.give_back(&c, &r).await.unwrap();
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (0, 1_000));

        // An overage call: its units and credits come back; the overage was
        // never taken from the credits.
        let c = format!("{case}-overage");
        seed(b, &c, 500, 0).await;
        let l = Limits {
            quota: quota(1, P, Some(200)),
            credit_price_micros: Some(100),
            ..open()
        };
        reservation(&admit(b, &c, &l).await);
        let r = reservation(&admit(b, &c, &l).await);
        assert_eq!(r.overage_units, 1);
        b.store.give_back(&c, &r).await.unwrap();
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (1, 400));

        // The quota counter does not go below zero: a reservation given back
        // after the counter was rebuilt lower leaves it at zero, and the
        // quota still admits exactly its limit.
        let c = format!("{case}-floor");
        seed(b, &c, 0, 0).await;
        let l = Limits {
            quota: quota(1, P, None),
            ..open()
        };
        let r = reservation(&admit(b, &c, &l).await);
        let rebuilt = Counters {
            credits_micros: 0,
            quota_used: 0,
            period_start: P,
        };
        assert!(b
            .store
            .seed(&c, rebuilt, SeedMode::Overwrite)
            .await
            .unwrap());
        b.store.give_back(&c, &r).await.unwrap();
        assert_eq!(peek(b, &c, &l).await.quota_used, 0);
        reservation(&admit(b, &c, &l).await);
        assert_eq!(admit(b, &c, &l).await.decision, Decision::QuotaExhausted);
    }

    pub async fn give_back_skips_units_of_an_ended_period(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 1_000, 0).await;
        let this = Limits {
            quota: quota(5, P, None),
            credit_price_micros: Some(100),
            ..open()
        };
        let next = Limits {
            quota: quota(5, NEXT_P, None),
            ..this
        };
        let old = reservation(&admit(b, &c, &this).await);
        assert_eq!(old.period_start, P);
        let new = reservation(&admit(b, &c, &next).await);
        assert_eq!(new.period_start, NEXT_P);
        assert_eq!(quota_used_and_credits(peek(b, &c, &next).await), (1, 800));
        // The old period's unit stays out of the new period's counter; its
        // credits come back.
        b.store.give_back(&c, &old).await.unwrap();
        assert_eq!(quota_used_and_credits(peek(b, &c, &next).await), (1, 900));
        b.store.give_back(&c, &new).await.unwrap();
        assert_eq!(quota_used_and_credits(peek(b, &c, &next).await), (0, 1_000));
    }

    pub async fn peek_reserves_nothing(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 1_000, 2).await;
        let l = Limits {
            quota: quota(10, P, None),
            credit_price_micros: Some(100),
            ..slow_bucket(3)
        };
        // An idle bucket is full.
        for _ in 0..5 {
            assert_eq!(
                peek(b, &c, &l).await,
                Snapshot {
                    rate_remaining: 3,
                    rate_reset_ms: 0,
                    quota_used: 2,
                    credits_micros: 1_000,
                }
            );
        }
        let a = admit(b, &c, &l).await;
        reservation(&a);
        assert_eq!(
            (
                a.snapshot.rate_remaining,
                a.snapshot.quota_used,
                a.snapshot.credits_micros
            ),
            (2, 3, 900)
        );
        assert!(a.snapshot.rate_reset_ms > 0);
        for _ in 0..5 {
            let s = peek(b, &c, &l).await;
            assert_eq!(
                (s.rate_remaining, s.quota_used, s.credits_micros),
                (2, 3, 900)
            );
            assert!(s.rate_reset_ms > 0 && s.rate_reset_ms <= a.snapshot.rate_reset_ms);
        }
        // Two calls left in the bucket, and they are all there are.
        for _ in 0..2 {
            reservation(&admit(b, &c, &l).await);
        }
        assert!(matches!(
            admit(b, &c, &l).await.decision,
            Decision::RateLimited { .. }
        ));
        // In the next period the quota is fresh.
        let next = Limits {
            quota: quota(10, NEXT_P, None),
            ..l
        };
        assert_eq!(quota_used_and_credits(peek(b, &c, &next).await), (0, 700));
    }

    pub async fn add_credits_returns_the_new_balance(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 100, 0).await;
        assert_eq!(b.store.add_credits(&c, 50).await.unwrap(), 150);
        assert_eq!(b.store.add_credits(&c, 25).await.unwrap(), 175);
        assert_eq!(peek(b, &c, &open()).await.credits_micros, 175);
        // At once: every top-up sees its own balance, none is lost.
        let top_ups = (0..50).map(|_| {
            let (store, c) = (Arc::clone(&b.store), c.clone());
            tokio::spawn(async move { store.add_credits(&c, 10).await.unwrap() })
        });
        let balances: BTreeSet<Micros> = futures::future::try_join_all(top_ups)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(balances, (1..=50).map(|i| 175 + 10 * i).collect());
        let l = Limits {
            credit_price_micros: Some(100),
            ..open()
        };
        assert_eq!(peek(b, &c, &l).await.credits_micros, 675);
        assert_eq!(admitted(&admit_concurrently(b, &c, l, 10).await), 6);
    }

    pub async fn seed_respects_the_mode(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        let l = Limits {
            quota: quota(10, P, None),
            ..slow_bucket(1)
        };
        let seeded = Counters {
            credits_micros: 7,
            quota_used: 3,
            period_start: P,
        };
        assert!(b.store.seed(&c, seeded, SeedMode::IfAbsent).await.unwrap());
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (3, 7));
        let again = Counters {
            credits_micros: 70,
            quota_used: 9,
            ..seeded
        };
        assert!(
            !b.store.seed(&c, again, SeedMode::IfAbsent).await.unwrap(),
            "live counters win"
        );
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (3, 7));
        assert!(b.store.seed(&c, again, SeedMode::Overwrite).await.unwrap());
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (9, 70));

        // A seed loads quota and credits only: the rate limit and the
        // WebSocket slots are live state and stay as they are.
        reservation(&admit(b, &c, &l).await);
        assert_eq!(open_many(b, &c, 1, 1).await, 1);
        assert!(b.store.seed(&c, seeded, SeedMode::Overwrite).await.unwrap());
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (3, 7));
        assert!(matches!(
            admit(b, &c, &l).await.decision,
            Decision::RateLimited { .. }
        ));
        assert_eq!(open_many(b, &c, 1, 1).await, 0);

        // The seeded period is the counter's: a later period starts at zero.
        let next = Limits {
            quota: quota(10, NEXT_P, None),
            ..l
        };
        assert_eq!(peek(b, &c, &next).await.quota_used, 0);
    }

    pub async fn unseeded_customers(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        let l = Limits {
            quota: quota(10, P, None),
            credit_price_micros: Some(10),
            ..open()
        };
        let free = Limits {
            credit_price_micros: None,
            ..l
        };
        let given = Reservation {
            quota_units: 1,
            credits_micros: 10,
            period_start: P,
            ..Reservation::default()
        };
        if b.refuses_unseeded {
            assert!(matches!(
                b.store.admit(&c, &l).await,
                Err(StoreError::NotSeeded)
            ));
            assert!(matches!(
                b.store.peek(&c, &l).await,
                Err(StoreError::NotSeeded)
            ));
            // Credits bought meanwhile are in the ledger and arrive with the seed.
            assert!(matches!(
                b.store.add_credits(&c, 5).await,
                Err(StoreError::NotSeeded)
            ));
            // Nothing to give back to: it writes nothing, the customer stays unseeded.
            b.store.give_back(&c, &given).await.unwrap();
            assert!(matches!(
                b.store.peek(&c, &l).await,
                Err(StoreError::NotSeeded)
            ));
        } else {
            // Zero counters: no credits, an unused quota.
            assert_eq!(
                admit(b, &c, &l).await.decision,
                Decision::InsufficientCredits
            );
            let a = admit(b, &c, &free).await;
            reservation(&a);
            assert_eq!(quota_used_and_credits(a.snapshot), (1, 0));
            assert_eq!(b.store.add_credits(&c, 5).await.unwrap(), 5);
            b.store.give_back(&c, &given).await.unwrap();
            assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (0, 15));
        }
        // Either way the customer counts as never seeded: the first seed is
        // written, and what it says is what the store holds.
        let counters = Counters {
            credits_micros: 100,
            quota_used: 4,
            period_start: P,
        };
        assert!(b
            .store
            .seed(&c, counters, SeedMode::IfAbsent)
            .await
            .unwrap());
        assert_eq!(quota_used_and_credits(peek(b, &c, &l).await), (4, 100));
        let a = admit(b, &c, &l).await;
        reservation(&a);
        assert_eq!(quota_used_and_credits(a.snapshot), (5, 90));
        assert_eq!(b.store.add_credits(&c, 5).await.unwrap(), 95);
    }

    pub async fn websocket_slots_are_bounded(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        let ttl = WEBSOCKET_LEASE_MS;
        assert_eq!(open_many(b, &c, 10, 3).await, 3);
        assert_eq!(b.store.websockets_open(&c).await.unwrap(), 3);
        assert_eq!(
            b.store.open_websocket(&c, "x", 3, ttl).await.unwrap(),
            WebsocketSlot::Full
        );
        // Closing one lease frees one slot.
        assert_eq!(
            b.store.open_websocket(&c, "y", 4, ttl).await.unwrap(),
            WebsocketSlot::Granted
        );
        b.store.close_websocket(&c, "y").await.unwrap();
        assert_eq!(b.store.websockets_open(&c).await.unwrap(), 3);
        // Closing a lease twice, or one never taken, frees nothing more.
        b.store.close_websocket(&c, "y").await.unwrap();
        b.store.close_websocket(&c, "never").await.unwrap();
        assert_eq!(
            b.store.open_websocket(&c, "z", 3, ttl).await.unwrap(),
            WebsocketSlot::Full
        );
        // Slots are per customer; a limit of zero grants none.
        let other = format!("{case}-other");
        assert_eq!(
            b.store.open_websocket(&other, "a", 0, ttl).await.unwrap(),
            WebsocketSlot::Full
        );
        assert_eq!(
            b.store.open_websocket(&other, "a", 1, ttl).await.unwrap(),
            WebsocketSlot::Granted
        );
    }

    pub async fn websocket_leases_expire_unless_renewed(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        // Two leases that live 300 ms; one of them is renewed for longer.
        for lease in ["dies", "lives"] {
            assert_eq!(
                b.store.open_websocket(&c, lease, 2, 300).await.unwrap(),
                WebsocketSlot::Granted
            );
        }
        assert_eq!(
            b.store.open_websocket(&c, "third", 2, 300).await.unwrap(),
            WebsocketSlot::Full
        );
        b.store.renew_websocket(&c, "lives", 60_000).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.store.websockets_open(&c).await.unwrap() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never expired"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The expired lease's slot is free again; the renewed one still counts.
        assert_eq!(
            b.store
                .open_websocket(&c, "third", 2, 60_000)
                .await
                .unwrap(),
            WebsocketSlot::Granted
        );
        assert_eq!(
            b.store
                .open_websocket(&c, "fourth", 2, 60_000)
                .await
                .unwrap(),
            WebsocketSlot::Full
        );
    }

    pub async fn spending_without_a_rate_limit(b: &Backend, case: &str) {
        let c = format!("{case}-c");
        seed(b, &c, 100, 0).await;
        // The bucket is empty after one call...
        let call = Limits {
            quota: quota(10, P, None),
            ..slow_bucket(1)
        };
        reservation(&admit(b, &c, &call).await);
        assert!(matches!(
            admit(b, &c, &call).await.decision,
            Decision::RateLimited { .. }
        ));
        // ...yet units spent by an open connection (no emission interval)
        // still go through, against quota and credits all the same.
        let spend = Limits {
            emission_interval_ns: 0,
            units: 4,
            credit_price_micros: Some(40),
            ..call
        };
        let r = reservation(&admit(b, &c, &spend).await);
        assert_eq!((r.quota_units, r.credits_micros), (4, 40));
        let r = reservation(&admit(b, &c, &spend).await);
        assert_eq!((r.quota_units, r.credits_micros), (4, 40));
        assert_eq!(
            admit(b, &c, &spend).await.decision,
            Decision::QuotaExhausted
        );
        assert_eq!(quota_used_and_credits(peek(b, &c, &call).await), (9, 20));
        // A part of a reservation goes back like a whole one.
        b.store
            .give_back(
                &c,
                &Reservation {
                    quota_units: 3,
                    credits_micros: 30,
                    period_start: P,
                    ..Reservation::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(quota_used_and_credits(peek(b, &c, &call).await), (6, 50));
    }

    pub async fn a_payment_is_claimed_once(b: &Backend, case: &str) {
        let id = format!("eip155:84532:0xpayer:{case}-nonce");
        // Ten gateways see the same payment at once: one claims it.
        let claims = (0..10).map(|_| {
            let (store, id) = (Arc::clone(&b.store), id.clone());
            tokio::spawn(async move { store.claim_payment(&id, 60_000).await.unwrap() })
        });
        let claims = futures::future::try_join_all(claims).await.unwrap();
        assert_eq!(
            claims
                .iter()
                .filter(|c| **c == PaymentClaim::Claimed)
                .count(),
            1,
            "{claims:?}"
        );
        assert_eq!(
            b.store.claim_payment(&id, 60_000).await.unwrap(),
            PaymentClaim::AlreadyClaimed
        );
        // A released claim (the payment was never used) can be made again.
        b.store.release_payment(&id).await.unwrap();
        assert_eq!(
            b.store.claim_payment(&id, 60_000).await.unwrap(),
            PaymentClaim::Claimed
        );
        // A claim ends with its time to live.
        let short = format!("{id}-short");
        assert_eq!(
            b.store.claim_payment(&short, 200).await.unwrap(),
            PaymentClaim::Claimed
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.store.claim_payment(&short, 200).await.unwrap() != PaymentClaim::Claimed {
            assert!(
                std::time::Instant::now() < deadline,
                "the claim never expired"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn ping(b: &Backend, _case: &str) {
        b.store.ping().await.unwrap();
    }
}
