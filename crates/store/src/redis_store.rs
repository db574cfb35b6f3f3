//! The shared store: every gateway of a deployment decides against the same
//! Redis (or Redis Cluster), so one customer has one rate limit, one quota and
//! one credit balance however many gateways serve it.
//!
//! One customer is one Redis hash, `{<prefix>:c:<id>}`, hash-tagged so that
//! a Cluster keeps it on one slot. Each operation is one Lua script (EVALSHA,
//! reloaded on NOSCRIPT by redis-rs) that reads the server's `TIME`, never a
//! gateway clock. Admitting a call is therefore one round trip.
//!
//! A customer hash carries `seeded = 1` once its quota and credits were loaded
//! from the ledger. A hash without it (a new Redis, or one that lost its data)
//! answers `NotSeeded`: the gateway treats that as "store unavailable" rather
//! than hand out a fresh quota, until the counters are rebuilt.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use paygate_core::Micros;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::Script;
use tokio::sync::OnceCell;

use crate::{
    Admission, Counters, Decision, Limits, PaymentClaim, Reservation, SeedMode, Snapshot, Store,
    StoreError, WebsocketSlot,
};

/// Shared by ADMIT and PEEK: the server clock, the customer's hash, and the
/// GCRA bucket state (calls that may go now, microseconds until full).
/// ARGV[1] is the emission interval in µs, ARGV[2] the capacity.
const GCRA_PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'seeded', 'tat', 'period', 'used', 'credits')
if not h[1] then return {4} end
local function state(x)
  if interval <= 0 then return cap, 0 end
  local reset = x - now
  if reset < 0 then reset = 0 end
  local rem = cap - math.ceil(reset / interval)
  if rem < 0 then rem = 0 end
  return rem, reset
end
"#;

const ADMIT: &str = r#"
local units = tonumber(ARGV[3])
local has_quota = ARGV[4] == '1'
local limit = tonumber(ARGV[5])
local pstart = tonumber(ARGV[6])
local over_price = tonumber(ARGV[7])
local price = tonumber(ARGV[8])
local tat = tonumber(h[2]) or 0
local period = tonumber(h[3]) or 0
local used = tonumber(h[4]) or 0
local credits = tonumber(h[5]) or 0
if has_quota and pstart > period then period = pstart; used = 0 end
local new_tat = tat
if interval > 0 then
  new_tat = math.max(tat, now) + interval
  local allow_at = new_tat - interval * cap
  if now < allow_at then
    local rem, reset = state(tat)
    return {1, allow_at - now, rem, reset, used, credits}
  end
end
local q_units, over_units, over_micros, credit_micros = 0, 0, 0, 0
if has_quota then
  local over = used + units - math.max(limit, used)
  if over < 0 then over = 0 end
  if over > 0 and over_price < 0 then
    local rem, reset = state(tat)
    return {2, 0, rem, reset, used, credits}
  end
  if over_price >= 0 then over_units = over; over_micros = over * over_price end
  q_units = units
end
if price >= 0 then
  if credits < price then
    local rem, reset = state(tat)
    return {3, 0, rem, reset, used, credits}
  end
  credit_micros = price
end
used = used + q_units
credits = credits - credit_micros
redis.call('HSET', KEYS[1], 'tat', new_tat, 'period', period, 'used', used, 'credits', credits)
local rem, reset = state(new_tat)
return {0, 0, rem, reset, used, credits, q_units, over_units, over_micros, credit_micros, period}
"#;

/// Quota units go back only into the period they were taken from.
const GIVE_BACK: &str = r#"
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return 0 end
local units = tonumber(ARGV[1])
if units > 0 and tonumber(redis.call('HGET', KEYS[1], 'period') or '0') == tonumber(ARGV[2]) then
  local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0') - units
  if used < 0 then used = 0 end
  redis.call('HSET', KEYS[1], 'used', used)
end
redis.call('HINCRBY', KEYS[1], 'credits', ARGV[3])
return 1
"#;

const PEEK: &str = r#"
local used = tonumber(h[4]) or 0
if ARGV[3] == '1' and tonumber(ARGV[4]) > (tonumber(h[3]) or 0) then used = 0 end
local rem, reset = state(tonumber(h[2]) or 0)
return {0, 0, rem, reset, used, tonumber(h[5]) or 0}
"#;

/// Credits added to a hash that is not seeded yet are already in the ledger
/// and arrive with the seed; adding them here too would count them twice.
const ADD_CREDITS: &str = r#"
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return {0, 0} end
return {1, redis.call('HINCRBY', KEYS[1], 'credits', ARGV[1])}
"#;

const SEED: &str = r#"
if ARGV[4] == 'if_absent' and redis.call('HEXISTS', KEYS[1], 'seeded') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'seeded', 1, 'credits', ARGV[1], 'used', ARGV[2], 'period', ARGV[3])
return 1
"#;

/// WebSocket leases: a sorted set of lease ids scored by expiry (ms, server
/// clock), beside the customer's hash (same hash tag, same Cluster slot).
/// Expired leases (a dead gateway's) are dropped before counting.
const WS_PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"#;

/// ARGV: lease, max, ttl_ms.
const OPEN_WS: &str = r#"
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// ARGV: lease, ttl_ms.
const RENEW_WS: &str = r#"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

const CLOSE_WS: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"#;

const COUNT_WS: &str = r#"
return redis.call('ZCARD', KEYS[1])
"#;

/// ARGV: ttl_ms. One key per payment identity, in a slot of its own.
const CLAIM_PAYMENT: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"#;

const RELEASE_PAYMENT: &str = r#"
redis.call('DEL', KEYS[1])
return 1
"#;

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://host:port/db` (or `rediss://` over TLS).
    Single(String),
    /// `redis+cluster://host:port,host:port` (or `rediss+cluster://`): seed
    /// nodes of a Redis Cluster, as node URLs.
    Cluster(Vec<String>),
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let cluster = [
            ("redis+cluster://", "redis"),
            ("rediss+cluster://", "rediss"),
        ]
        .into_iter()
        .find_map(|(prefix, scheme)| url.strip_prefix(prefix).map(|rest| (rest, scheme)));
        if let Some((rest, scheme)) = cluster {
            let nodes: Vec<String> = rest
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|n| format!("{scheme}://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "{scheme}+cluster:// needs at least one host:port"
                )));
            }
            return Ok(Self::Cluster(nodes));
        }
        Ok(Self::Single(url.to_string()))
    }
}

/// A store URL and, for `rediss://`, the CA certificates (PEM) the server's
/// certificate is checked against; the system roots when there are none.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    pub url: String,
    pub root_ca: Option<Vec<u8>>,
}

impl RedisEndpoint {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            root_ca: None,
        }
    }

    pub fn with_root_ca(self, pem: Vec<u8>) -> Self {
        Self {
            root_ca: Some(pem),
            ..self
        }
    }

    pub fn target(&self) -> Result<RedisTarget, StoreError> {
        RedisTarget::parse(&self.url)
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.root_ca.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    /// A client for one node URL of this endpoint.
    pub fn client(&self, node: &str) -> Result<redis::Client, StoreError> {
        match self
            .certificates()
            .filter(|_| node.starts_with("rediss://"))
        {
            Some(certs) => redis::Client::build_with_tls(node, certs),
            None => redis::Client::open(node),
        }
        .map_err(unavailable)
    }

    /// A cluster over `rediss://` verifies against the system roots (and
    /// `SSL_CERT_FILE`): redis-rs takes a CA of its own for a cluster only
    /// with rustls, and paygate carries OpenSSL alone; the config refuses
    /// `store.tls_ca_path` with a cluster URL.
    fn cluster_builder(&self, nodes: Vec<String>) -> redis::cluster::ClusterClientBuilder {
        redis::cluster::ClusterClient::builder(nodes)
            .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
    }
}

impl From<&str> for RedisEndpoint {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<&String> for RedisEndpoint {
    fn from(url: &String) -> Self {
        Self::new(url.as_str())
    }
}

impl From<&RedisEndpoint> for RedisEndpoint {
    fn from(e: &RedisEndpoint) -> Self {
        e.clone()
    }
}

/// A connection to Redis or Redis Cluster that exists before Redis does:
/// commands fail with `Unavailable` until it can be reached.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(Arc<OnceCell<ClusterConnection>>),
}

impl RedisConn {
    /// Must run inside a tokio runtime, which then drives the connection.
    pub fn connect(endpoint: impl Into<RedisEndpoint>) -> Result<Self, StoreError> {
        let endpoint = endpoint.into();
        Ok(match endpoint.target()? {
            RedisTarget::Single(u) => {
                let client = endpoint.client(&u)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(500)))
                    .set_response_timeout(None)
                    .set_max_delay(Duration::from_millis(500));
                Self::Single(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?,
                )
            }
            RedisTarget::Cluster(nodes) => {
                let client = endpoint
                    .cluster_builder(nodes)
                    .connection_timeout(Duration::from_millis(500))
                    .build()
                    .map_err(unavailable)?;
                let cell = Arc::new(OnceCell::new());
                let fill = Arc::clone(&cell);
                tokio::spawn(async move {
                    let mut delay = Duration::from_millis(100);
                    loop {
                        match client.get_async_connection().await {
                            Ok(c) => {
                                let _ = fill.set(c);
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "redis cluster not reachable yet");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                });
                Self::Cluster(cell)
            }
        })
    }

    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match self {
            Self::Single(c) => inv.invoke_async(&mut c.clone()).await.map_err(unavailable),
            Self::Cluster(cell) => match cell.get() {
                Some(c) => inv.invoke_async(&mut c.clone()).await.map_err(unavailable),
                None => Err(StoreError::Unavailable("not connected yet".into())),
            },
        }
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        match self {
            Self::Single(c) => cmd.query_async(&mut c.clone()).await.map_err(unavailable),
            Self::Cluster(cell) => match cell.get() {
                Some(c) => cmd.query_async(&mut c.clone()).await.map_err(unavailable),
                None => Err(StoreError::Unavailable("not connected yet".into())),
            },
        }
    }

    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        match self {
            Self::Single(c) => pipe.query_async(&mut c.clone()).await.map_err(unavailable),
            Self::Cluster(cell) => match cell.get() {
                Some(c) => pipe.query_async(&mut c.clone()).await.map_err(unavailable),
                None => Err(StoreError::Unavailable("not connected yet".into())),
            },
        }
    }
}

/// Fails fast while Redis is known to be down, so a dead Redis costs
/// microseconds per call instead of `timeout_ms`: after `THRESHOLD`
/// consecutive failures the breaker opens for `COOL_DOWN`, then lets one call
/// through to probe.
struct Breaker {
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which calls fail fast.
    open_until_ms: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    const THRESHOLD: u32 = 3;
    const COOL_DOWN: Duration = Duration::from_millis(100);

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        // Half-open: the first caller after the cool-down probes; the others
        // keep failing fast until it reports.
        self.open_until_ms
            .compare_exchange(
                until,
                now + Self::COOL_DOWN.as_millis() as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    /// Redis answered the control side: an open breaker lets the next call
    /// probe now instead of after its cool-down (that call's outcome, not
    /// this answer, closes it).
    fn probe_now(&self) {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        if until > 1 {
            let _ =
                self.open_until_ms
                    .compare_exchange(until, 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn failure(&self) {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= Self::THRESHOLD {
            let until = self.now_ms() + Self::COOL_DOWN.as_millis() as u64;
            self.open_until_ms.store(until.max(1), Ordering::Relaxed);
        }
    }
}

struct Scripts {
    admit: Script,
    give_back: Script,
    peek: Script,
    add_credits: Script,
    seed: Script,
    open_ws: Script,
    renew_ws: Script,
    close_ws: Script,
    count_ws: Script,
    claim_payment: Script,
    release_payment: Script,
}

/// One multiplexed connection per thread that calls, for the hot path. A
/// connection's driver task runs where the connection was made; made on the
/// gateway's own threads, a call's request and answer do not hop to another
/// runtime's thread and back (two thread wake-ups per call otherwise).
///
/// A thread's connection is made in the background, once, while its first
/// calls go over the shared connection: over `rediss://` making one costs
/// tens of milliseconds of CPU (OpenSSL loads the trust store), and every
/// call that found no connection making its own would pile those up.
struct PerThread {
    client: redis::Client,
    conns: thread_local::ThreadLocal<Arc<ThreadSlot>>,
}

#[derive(Default)]
struct ThreadSlot {
    conn: arc_swap::ArcSwapOption<redis::aio::MultiplexedConnection>,
    connecting: std::sync::atomic::AtomicBool,
}

impl PerThread {
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
        shared: &RedisConn,
    ) -> Result<T, StoreError> {
        let slot = Arc::clone(self.conns.get_or(Default::default));
        let Some(conn) = slot.conn.load_full() else {
            self.connect_in_background(slot);
            return shared.invoke(inv).await;
        };
        let result = inv
            .invoke_async(&mut (*conn).clone())
            .await
            .map_err(unavailable);
        if result.is_err() {
            // Made again by the next call from this thread.
            slot.conn.store(None);
        }
        result
    }

    fn connect_in_background(&self, slot: Arc<ThreadSlot>) {
        if slot.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => slot.conn.store(Some(Arc::new(c))),
                Err(e) => tracing::debug!(error = %e, "per-thread redis connection not made"),
            }
            slot.connecting.store(false, Ordering::Release);
        });
    }
}

/// [`Store`] on Redis or Redis Cluster.
pub struct RedisStore {
    conn: RedisConn,
    /// Single-server mode: the connections admission calls use.
    hot: Option<PerThread>,
    prefix: String,
    timeout: Duration,
    breaker: Breaker,
    scripts: Scripts,
}

impl RedisStore {
    /// Builds the store without waiting for Redis: a gateway starts while
    /// Redis is down and recovers when it comes back. Must run inside a
    /// tokio runtime, which then drives the connection.
    pub fn connect(
        endpoint: impl Into<RedisEndpoint>,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let endpoint = endpoint.into();
        let conn = RedisConn::connect(&endpoint)?;
        let hot = match endpoint.target()? {
            RedisTarget::Single(u) => Some(PerThread {
                client: endpoint.client(&u)?,
                conns: thread_local::ThreadLocal::new(),
            }),
            RedisTarget::Cluster(_) => None,
        };
        Ok(Self {
            conn,
            hot,
            prefix: prefix.to_string(),
            timeout,
            breaker: Breaker {
                failures: AtomicU32::new(0),
                open_until_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            },
            scripts: Scripts {
                admit: Script::new(&format!("{GCRA_PRELUDE}{ADMIT}")),
                give_back: Script::new(GIVE_BACK),
                peek: Script::new(&format!("{GCRA_PRELUDE}{PEEK}")),
                add_credits: Script::new(ADD_CREDITS),
                seed: Script::new(SEED),
                open_ws: Script::new(&format!("{WS_PRELUDE}{OPEN_WS}")),
                renew_ws: Script::new(&format!("{WS_PRELUDE}{RENEW_WS}")),
                close_ws: Script::new(CLOSE_WS),
                count_ws: Script::new(&format!("{WS_PRELUDE}{COUNT_WS}")),
                claim_payment: Script::new(CLAIM_PAYMENT),
                release_payment: Script::new(RELEASE_PAYMENT),
            },
        })
    }

    fn key(&self, customer: &str) -> String {
        format!("{{{}:c:{customer}}}", self.prefix)
    }

    /// The customer's WebSocket leases, in the slot of its hash.
    fn ws_key(&self, customer: &str) -> String {
        format!("{{{}:c:{customer}}}:ws", self.prefix)
    }

    /// The seeding marker (`Store::epoch`).
    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// An x402 payment identity's claim.
    fn payment_key(&self, identity: &str) -> String {
        format!("{}:x402:{identity}", self.prefix)
    }

    /// Runs one script invocation of the request path under the timeout
    /// and the breaker.
    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.call(inv, Path::Request).await
    }

    /// Runs one invocation under the timeout; on the request path also
    /// under the breaker. Rebuilding counters is not held back by an open
    /// breaker, and its success lets the next call probe at once.
    async fn call<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
        path: Path,
    ) -> Result<T, StoreError> {
        if path == Path::Request && !self.breaker.allow() {
            return Err(StoreError::Unavailable("circuit open".into()));
        }
        let call = async {
            let mut tries = 0;
            loop {
                let r = match &self.hot {
                    Some(hot) => hot.invoke(&inv, &self.conn).await,
                    None => self.conn.invoke(&inv).await,
                };
                tries += 1;
                // A connection that broke under us (Redis restarted) is
                // made again by the failed call; a script that was never
                // sent is sent again, within the same deadline.
                match r {
                    Err(StoreError::Redis(e)) if tries < 3 && never_sent(&e) => continue,
                    r => break r,
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        match (&result, path) {
            (Ok(_), Path::Request) => self.breaker.success(),
            (Ok(_), Path::Control) => self.breaker.probe_now(),
            (Err(_), Path::Request) => self.breaker.failure(),
            (Err(_), Path::Control) => {}
        }
        result
    }
}

impl RedisStore {
    /// One command off the request path, with a deadline of at least
    /// 250 ms (a health probe or a marker may wait longer than a call).
    async fn query_within<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let deadline = self.timeout.max(Duration::from_millis(250));
        match tokio::time::timeout(deadline, self.conn.query::<T>(cmd)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// A command of the control side: when Redis answers, the next call
    /// may probe without waiting for the breaker's cool-down.
    async fn control<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let r = self.query_within(cmd).await;
        if r.is_ok() {
            self.breaker.probe_now();
        }
        r
    }
}

/// Who makes a script call: a call being admitted, or the control side
/// (seeding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Request,
    Control,
}

/// Whether a failed command cannot have reached Redis: the connection was
/// refused or not there. (A broken pipe or a reset may be reported for a
/// command that was already written, and ran: it is not retried, since
/// running a script twice would reserve twice.)
fn never_sent(e: &redis::RedisError) -> bool {
    use std::error::Error as _;
    let io = e
        .source()
        .and_then(|s| s.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>())
        .and_then(|inner| inner.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotConnected
        )
    })
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e)
}

/// Reads the `{code, retry_us, remaining, reset_us, used, credits, …}` reply.
fn snapshot(v: &[i64]) -> Snapshot {
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Snapshot {
        rate_remaining: u32::try_from(at(2)).unwrap_or(0),
        rate_reset_ms: u64::try_from(at(3)).unwrap_or(0).div_ceil(1000),
        quota_used: u64::try_from(at(4)).unwrap_or(0),
        credits_micros: at(5),
    }
}

/// 0 only for spending without a rate limit (an open WebSocket's units).
fn micros_interval(l: &Limits) -> u64 {
    if l.emission_interval_ns == 0 {
        return 0;
    }
    (l.emission_interval_ns / 1000).max(1)
}

#[async_trait]
impl Store for RedisStore {
    async fn admit(&self, customer: &str, l: &Limits) -> Result<Admission, StoreError> {
        let (has_quota, limit, pstart, over) = match l.quota {
            Some(q) => (
                1,
                q.limit,
                q.period_start,
                q.overage_price_micros.unwrap_or(-1),
            ),
            None => (0, 0, 0, -1),
        };
        let mut inv = self.scripts.admit.key(self.key(customer));
        inv.arg(micros_interval(l))
            .arg(l.capacity)
            .arg(l.units)
            .arg(has_quota)
            .arg(limit)
            .arg(pstart)
            .arg(over)
            .arg(l.credit_price_micros.unwrap_or(-1));
        let v: Vec<i64> = self.run(inv).await?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let decision = match at(0) {
            0 => Decision::Admitted(Reservation {
                quota_units: u64::try_from(at(6)).unwrap_or(0),
                overage_units: u64::try_from(at(7)).unwrap_or(0),
                overage_micros: at(8),
                credits_micros: at(9),
                period_start: at(10),
            }),
            1 => Decision::RateLimited {
                retry_after_ms: u64::try_from(at(1)).unwrap_or(0).div_ceil(1000),
            },
            2 => Decision::QuotaExhausted,
            3 => Decision::InsufficientCredits,
            _ => return Err(StoreError::NotSeeded),
        };
        Ok(Admission {
            decision,
            snapshot: snapshot(&v),
        })
    }

    async fn give_back(&self, customer: &str, r: &Reservation) -> Result<(), StoreError> {
        let mut inv = self.scripts.give_back.key(self.key(customer));
        inv.arg(r.quota_units)
            .arg(r.period_start)
            .arg(r.credits_micros);
        let _: i64 = self.run(inv).await?;
        Ok(())
    }

    async fn peek(&self, customer: &str, l: &Limits) -> Result<Snapshot, StoreError> {
        let (has_quota, pstart) = match l.quota {
            Some(q) => (1, q.period_start),
            None => (0, 0),
        };
        let mut inv = self.scripts.peek.key(self.key(customer));
        inv.arg(micros_interval(l))
            .arg(l.capacity)
            .arg(has_quota)
            .arg(pstart);
        let v: Vec<i64> = self.run(inv).await?;
        if v.first() == Some(&4) {
            return Err(StoreError::NotSeeded);
        }
        Ok(snapshot(&v))
    }

    async fn add_credits(&self, customer: &str, micros: Micros) -> Result<Micros, StoreError> {
        let mut inv = self.scripts.add_credits.key(self.key(customer));
        inv.arg(micros);
        let v: Vec<i64> = self.run(inv).await?;
        match v.as_slice() {
            [1, balance] => Ok(*balance),
            _ => Err(StoreError::NotSeeded),
        }
    }

    async fn seed(&self, customer: &str, c: Counters, mode: SeedMode) -> Result<bool, StoreError> {
        let mut inv = self.scripts.seed.key(self.key(customer));
        inv.arg(c.credits_micros)
            .arg(c.quota_used)
            .arg(c.period_start)
            .arg(match mode {
                SeedMode::IfAbsent => "if_absent",
                SeedMode::Overwrite => "overwrite",
            });
        let written: i64 = self.call(inv, Path::Control).await?;
        Ok(written == 1)
    }

    async fn open_websocket(
        &self,
        customer: &str,
        lease: &str,
        max: u32,
        ttl_ms: u64,
    ) -> Result<WebsocketSlot, StoreError> {
        let mut inv = self.scripts.open_ws.key(self.ws_key(customer));
        inv.arg(lease).arg(max).arg(ttl_ms);
        let granted: i64 = self.run(inv).await?;
        Ok(if granted == 1 {
            WebsocketSlot::Granted
        } else {
            WebsocketSlot::Full
        })
    }

    async fn renew_websocket(
        &self,
        customer: &str,
        lease: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let mut inv = self.scripts.renew_ws.key(self.ws_key(customer));
        inv.arg(lease).arg(ttl_ms);
        let _: i64 = self.run(inv).await?;
        Ok(())
    }

    async fn close_websocket(&self, customer: &str, lease: &str) -> Result<(), StoreError> {
        let mut inv = self.scripts.close_ws.key(self.ws_key(customer));
        inv.arg(lease);
        let _: i64 = self.run(inv).await?;
        Ok(())
    }

    async fn websockets_open(&self, customer: &str) -> Result<u32, StoreError> {
        let n: i64 = self
            .run(self.scripts.count_ws.key(self.ws_key(customer)))
            .await?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    async fn claim_payment(&self, identity: &str, ttl_ms: u64) -> Result<PaymentClaim, StoreError> {
        let mut inv = self.scripts.claim_payment.key(self.payment_key(identity));
        inv.arg(ttl_ms.max(1));
        let claimed: i64 = self.run(inv).await?;
        Ok(if claimed == 1 {
            PaymentClaim::Claimed
        } else {
            PaymentClaim::AlreadyClaimed
        })
    }

    async fn release_payment(&self, identity: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .run(self.scripts.release_payment.key(self.payment_key(identity)))
            .await?;
        Ok(())
    }

    async fn epoch(&self) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.epoch_key());
        self.control(&cmd).await
    }

    async fn mark_epoch(&self, candidate: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.epoch_key()).arg(candidate).arg("NX");
        // `nil` when another process's marker is already there.
        self.control::<Option<String>>(&cmd).await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query_within::<String>(&redis::cmd("PING"))
            .await
            .map(|_| ())
    }
}
