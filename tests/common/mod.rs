//! Test harness: a mock upstream (the only mocked party), a real `paygate`
//! process on free ports with its own ledger (SQLite, or Postgres through
//! [`Ledger`]), and helpers to drive it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-admin-token";

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shared test Redis (each test uses its own key prefix on it).
pub fn redis_url() -> String {
    std::env::var("PAYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Runs one command on the shared test Redis, as an operator (or a failure) would.
pub async fn on_shared_redis(cmd: &redis::Cmd) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
}

/// A port for a paygate listener, which paygate binds itself a moment later.
///
/// Not a port the kernel hands out for `bind(0)` (Linux's ephemeral range
/// starts at 32768): a port picked that way and released could be taken by
/// a mock server of a test running beside this one before paygate binds it,
/// and a call to "paygate" then reached the mock (a 404 where a 413 was
/// due). Ports here come from below that range, each handed out once per
/// test process, and are checked free before they are.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const COUNT: u32 = 20_000;
    // Test binaries run one after another; a start of their own keeps one
    // from reusing the ports the one before it just left in TIME_WAIT.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + n % COUNT) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

// ---------------------------------------------------------------- upstream

#[derive(Clone, Default)]
pub struct MockState {
    pub hits: Arc<AtomicU64>,
    pub healthy: Arc<AtomicBool>,
    pub last_headers: Arc<Mutex<HashMap<String, String>>>,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub state: MockState,
}

impl Mock {
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }
    pub fn set_healthy(&self, up: bool) {
        self.state.healthy.store(up, Ordering::SeqCst);
    }
    pub fn last_headers(&self) -> HashMap<String, String> {
        self.state.last_headers.lock().unwrap().clone()
    }
}

fn record(s: &MockState, h: &HeaderMap) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let map = h
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    *s.last_headers.lock().unwrap() = map;
}

/// An upstream with `/health`, `/v1/status/{code}`, `/v1/slow/{ms}`,
/// `/v1/big/{n}` (a body of `n` bytes), `/v1/cache-control/{directive}`
/// (an answer with that `Cache-Control`),
/// `/v1/ws` (WebSocket echo), `/v1/ticks/{n}` (a WebSocket that sends `n`
/// messages, text and binary, some in fragments, with pings between, then
/// closes) and a JSON 200 for everything else.
pub async fn mock_upstream() -> Mock {
    let state = MockState::default();
    state.healthy.store(true, Ordering::SeqCst);
    let app = Router::new()
        .route(
            "/health",
            get(|State(s): State<MockState>| async move {
                if s.healthy.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .route(
            "/v1/status/{code}",
            any(
                |State(s): State<MockState>, h: HeaderMap, Path(code): Path<u16>| async move {
                    record(&s, &h);
                    (
                        StatusCode::from_u16(code).unwrap(),
                        Json(json!({"status": code})),
                    )
                },
            ),
        )
        .route(
            "/v1/slow/{ms}",
            any(
                |State(s): State<MockState>, h: HeaderMap, Path(ms): Path<u64>| async move {
                    record(&s, &h);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Json(json!({"slept_ms": ms}))
                },
            ),
        )
        .route(
            "/v1/cache-control/{directive}",
            get(
                |State(s): State<MockState>, h: HeaderMap, Path(d): Path<String>| async move {
                    record(&s, &h);
                    (
                        [("cache-control", d)],
                        Json(json!({"n": s.hits.load(Ordering::SeqCst)})),
                    )
                },
            ),
        )
        .route(
            "/v1/big/{n}",
            any(
                |State(s): State<MockState>, h: HeaderMap, Path(n): Path<usize>| async move {
                    record(&s, &h);
                    "x".repeat(n)
                },
            ),
        )
        .route(
            "/v1/ws",
            get(
                |State(s): State<MockState>, h: HeaderMap, ws: WebSocketUpgrade| async move {
                    record(&s, &h);
                    ws.on_upgrade(|mut socket| async move {
                        while let Some(Ok(msg)) = socket.recv().await {
                            if let Message::Close(_) = msg {
                                break;
                            }
                            if socket.send(msg).await.is_err() {
                                break;
                            }
                        }
                    })
                },
            ),
        )
        .route(
            "/v1/ticks/{n}",
            get(
                |State(s): State<MockState>,
                 h: HeaderMap,
                 Path(n): Path<u32>,
                 ws: WebSocketUpgrade| async move {
                    record(&s, &h);
                    ws.on_upgrade(move |mut socket| async move {
                        for i in 0..n {
                            let msg = if i % 3 == 2 {
                                Message::Binary(vec![i as u8; 200].into())
                            } else {
                                Message::Text(format!("tick {i}").into())
                            };
                            if socket.send(msg).await.is_err() {
                                return;
                            }
                            if i % 5 == 0
                                && socket.send(Message::Ping(vec![1].into())).await.is_err()
                            {
                                return;
                            }
                        }
                        let _ = socket.send(Message::Close(None)).await;
                        // Drain until the client's close (or the gateway's).
                        while let Some(Ok(m)) = socket.recv().await {
                            if let Message::Close(_) = m {
                                break;
                            }
                        }
                    })
                },
            ),
        )
        .fallback(
            |State(s): State<MockState>, h: HeaderMap, uri: axum::http::Uri| async move {
                record(&s, &h);
                Json(json!({"path": uri.path()})).into_response()
            },
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Mock { addr, state }
}

/// Upstream and routes for one mock: `api` (every method, cost 1), `get-only`
/// (GET only), `pricey` (cost 5).
pub fn routes_for(target: SocketAddr) -> String {
    format!(
        r#"
[[upstreams]]
name = "mock"
targets = ["{target}"]
read_timeout_ms = 500

[[routes]]
id = "api"
path_prefix = "/v1"
upstream = "mock"

[[routes]]
id = "get-only"
path_prefix = "/v1/readonly"
upstream = "mock"
methods = ["GET"]

[[routes]]
id = "pricey"
path_prefix = "/v1/pricey"
upstream = "mock"
cost = 5
"#
    )
}

/// A config file in `dir` that sets only a SQLite database (memory store,
/// every other key at its default).
pub fn embedded_config(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n",
            dir.join("l.db").display()
        ),
    )
    .unwrap();
    path
}

// ---------------------------------------------------------------- paygate

pub struct Paygate {
    child: Option<Child>,
    /// The subcommand it runs: `serve`, `gateway` or `admin`.
    command: &'static str,
    pub gw: String,
    pub admin: String,
    /// The ledger database every gateway started in the same directory shares.
    pub db_url: String,
    pub config_path: PathBuf,
    /// Where its standard output (the log) goes.
    pub stdout_path: PathBuf,
    pub client: reqwest::Client,
    wait: Wait,
}

/// What `start` waits for.
#[derive(Clone, Copy)]
pub enum Wait {
    /// `/readyz`: store and database reachable.
    Ready,
    /// `/healthz` only: for a store that is down on purpose.
    Live,
}

impl Paygate {
    /// Starts `paygate serve` with a fresh database in `dir` and `extra` TOML
    /// (upstreams, routes) appended.
    pub async fn start(dir: &std::path::Path, extra: &str) -> Paygate {
        Self::start_named(dir, "paygate", extra, Wait::Ready).await
    }

    /// Another process in the same directory shares its ledger database;
    /// `name` keeps its config file apart.
    pub async fn start_named(
        dir: &std::path::Path,
        name: &str,
        extra: &str,
        wait: Wait,
    ) -> Paygate {
        Self::start_as(dir, name, "serve", extra, wait).await
    }

    /// Like [`Paygate::start_named`], running `paygate <command>`.
    pub async fn start_as(
        dir: &std::path::Path,
        name: &str,
        command: &'static str,
        extra: &str,
        wait: Wait,
    ) -> Paygate {
        let db_url = ledger_url(dir);
        let config_path = dir.join(format!("{name}.toml"));
        let (gw_port, admin_port) = (free_port(), free_port());
        let text = format!(
            r#"
[gateway]
listen = "127.0.0.1:{gw_port}"
threads = 2
shutdown_grace_seconds = 0
max_body_bytes = 1024

[admin]
listen = "127.0.0.1:{admin_port}"

[database]
url = "{db_url}"

{usage}
{extra}
"#,
            // A test that sets its own [usage] section sets the flush interval too.
            usage = if extra.contains("[usage]") {
                ""
            } else {
                "[usage]\nflush_interval_ms = 5"
            },
        );
        std::fs::write(&config_path, text).unwrap();
        let mut pg = Paygate {
            child: None,
            command,
            gw: format!("http://127.0.0.1:{gw_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            db_url,
            stdout_path: dir.join(format!("{name}.stdout")),
            config_path,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            wait,
        };
        pg.launch().await;
        pg
    }

    async fn launch(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_paygate"))
            .args([self.command, "--config"])
            .arg(&self.config_path)
            .env("PAYGATE_ADMIN_TOKEN", TOKEN)
            .env("PAYGATE_KEY_SECRET", "test-key-secret")
            // PAYGATE_TEST_LOG=debug shows a failing test's paygate in full
            // (paygate logs to standard output).
            // A test that sets its own [log] section keeps its level.
            .env(
                "PAYGATE_LOG",
                std::env::var("PAYGATE_TEST_LOG").unwrap_or_else(|_| {
                    let text = std::fs::read_to_string(&self.config_path).unwrap_or_default();
                    let level = text
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("level = "))
                        .filter(|_| text.contains("\n[log]"))
                        .map(|v| v.trim_matches('"').to_string());
                    level.unwrap_or_else(|| "warn".into())
                }),
            )
            .stdout(match std::env::var_os("PAYGATE_TEST_LOG") {
                Some(_) => Stdio::inherit(),
                None => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.stdout_path)
                        .unwrap(),
                ),
            })
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let (client, admin, gw) = (self.client.clone(), self.admin.clone(), self.gw.clone());
        let probe = match self.wait {
            Wait::Ready => "readyz",
            Wait::Live => "healthz",
        };
        // `paygate admin` has no gateway listener.
        let proxies = self.command != "admin";
        eventually("paygate to be up", Duration::from_secs(30), || {
            let (client, admin, gw) = (client.clone(), admin.clone(), gw.clone());
            async move {
                let ready = client.get(format!("{admin}/{probe}")).send().await.ok()?;
                if !ready.status().is_success() {
                    return None;
                }
                if !proxies {
                    return Some(());
                }
                client.get(format!("{gw}/")).send().await.ok().map(|_| ())
            }
        })
        .await;
    }

    /// The process id (0 once it is stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: the process dies on the spot, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGHUP: reload the config file.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The value of one metric series, `name{labels}` as rendered (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGTERM, then wait for the process to exit (it flushes usage first).
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child).await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// An admin API call: (status, JSON body).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.admin))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates a plan (fields merged over a permissive default), a customer
    /// on it and a key; returns the key.
    pub async fn customer_with_plan(&self, customer: &str, plan: Value) -> String {
        let mut p = json!({
            "id": format!("plan-{customer}"), "name": "Test plan",
            "rate_limit": {"requests": 100000, "per": "second", "burst": 100000},
            "routes": ["*"], "overage": "block", "monthly_fee_micros": 0, "max_websockets": 0
        });
        for (k, v) in plan.as_object().unwrap() {
            p[k] = v.clone();
        }
        let (s, b) = self.admin("POST", "/admin/v1/plans", Some(p.clone())).await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = self
            .admin(
                "POST",
                "/admin/v1/customers",
                Some(json!({"id": customer, "name": customer, "email": "t@example.com", "plan_id": p["id"]})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        self.new_key(customer).await
    }

    pub async fn new_key(&self, customer: &str) -> String {
        let (s, b) = self
            .admin(
                "POST",
                &format!("/admin/v1/customers/{customer}/keys"),
                None,
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["key"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.gw))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
    }

    /// The ledger, opened as finance tools would (schema untouched).
    pub async fn ledger(&self) -> paygate_billing::Database {
        paygate_billing::Database::open(&self.db_url).await.unwrap()
    }

    /// (billable, not billable) events of a customer in the ledger.
    pub async fn ledger_counts(&self, customer: &str) -> (u64, u64) {
        let counts = self.ledger().await.event_counts(customer).await.unwrap();
        let get = |b: bool| counts.get(&b).copied().unwrap_or(0);
        (get(true), get(false))
    }

    /// Waits until the ledger holds exactly these counts.
    pub async fn expect_ledger(&self, customer: &str, billable: u64, not_billable: u64) {
        let mut last = (0, 0);
        let ok = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                last = self.ledger_counts(customer).await;
                if last == (billable, not_billable) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "ledger for {customer}: expected ({billable}, {not_billable}), have {last:?}"
        );
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Paygate {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A paygate with a fresh SQLite ledger in front of a fresh mock upstream (`routes_for`).
pub async fn started() -> (tempfile::TempDir, Mock, Paygate) {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let pg = Paygate::start(dir.path(), &routes_for(mock.addr)).await;
    (dir, mock, pg)
}

/// The gateways a test starts in `dir` keep their ledger in a SQLite file
/// there, unless [`use_database`] chose another database for that directory.
pub fn ledger_url(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("ledger.url"))
        .unwrap_or_else(|_| format!("sqlite://{}", dir.join("ledger.db").display()))
}

/// Makes the gateways started in `dir` use a fresh database of `kind`;
/// keep the returned value alive as long as they run.
pub fn use_database(
    dir: &std::path::Path,
    kind: paygate_testkit::DbKind,
) -> paygate_testkit::TestDb {
    let db = paygate_testkit::TestDb::new(kind);
    std::fs::write(dir.join("ledger.url"), &db.url).unwrap();
    db
}

/// A test directory whose gateways use a fresh ledger of one kind.
pub struct Ledger {
    pub dir: tempfile::TempDir,
    _db: paygate_testkit::TestDb,
}

impl Ledger {
    pub fn new(kind: paygate_testkit::DbKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = use_database(dir.path(), kind);
        Self { dir, _db: db }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// [`started`] on a ledger of `kind`.
pub async fn started_on(kind: paygate_testkit::DbKind) -> (Ledger, Mock, Paygate) {
    let ledger = Ledger::new(kind);
    let mock = mock_upstream().await;
    let pg = Paygate::start(ledger.path(), &routes_for(mock.addr)).await;
    (ledger, mock, pg)
}

/// SIGTERM, then wait: paygate must exit cleanly.
pub async fn terminate(mut child: Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "paygate exited with {status}");
}

/// The error code of a gateway error body.
pub async fn error_code(resp: reqwest::Response) -> String {
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    v["error"]["code"].as_str().unwrap().to_string()
}

pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}
