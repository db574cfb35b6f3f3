//! Test support shared by the crates' tests: real `redis-server` processes on
//! free loopback ports, killed when dropped, and a fresh SQLite or Postgres
//! database per test. Nothing here is mocked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod jwt;
pub mod otlp;
pub mod tls;
pub mod x402;

/// Serves `app` on a free loopback port, on the caller's tokio runtime, for
/// as long as the runtime lives; returns the address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A billable one-unit call `req-<i>` of customer `c`, now, in period
/// 2026-11: the usage event tests start from (`..usage_event(i)`).
pub fn usage_event(i: usize) -> paygate_core::UsageEvent {
    paygate_core::UsageEvent {
        request_id: format!("req-{i}"),
        ts: chrono::Utc::now(),
        customer_id: "c".into(),
        key_id: "k".into(),
        plan_id: "p".into(),
        route: "r".into(),
        method: "GET".into(),
        status: 200,
        billable: true,
        units: 1,
        overage_units: 0,
        amount_micros: 0,
        credits_micros: 0,
        period: "2026-11".into(),
        latency_us: 5,
        payment: None,
    }
}

/// A free port whose cluster-bus port (+10000) is free too.
pub fn cluster_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn wait_for_ping(port: u16, deadline: Instant) {
    while !Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ping"])
        .output()
        .unwrap()
        .stdout
        .starts_with(b"PONG")
    {
        assert!(Instant::now() < deadline, "redis on {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A 3-master Redis Cluster (no replicas), built with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| cluster_port()).collect();
        let nodes = ports
            .iter()
            .map(|p| {
                Command::new("redis-server")
                    .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{p}.conf")])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server on PATH")
            })
            .collect();
        let cluster = Self {
            nodes,
            ports,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for p in &cluster.ports {
            wait_for_ping(*p, deadline);
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
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

    /// `redis+cluster://host:port,host:port,host:port`
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

/// One `redis-server` on a given port, killed when dropped (also when a test
/// fails half-way), so no server outlives its test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    aof_dir: Option<std::path::PathBuf>,
    tls: Option<tls::ServerFiles>,
}

impl RedisServer {
    /// Without persistence.
    pub fn start(port: u16) -> Self {
        Self::launch(port, None, None)
    }

    /// With AOF and `appendfsync always` in `dir`, as production runs it:
    /// a restart keeps the data.
    pub fn start_with_aof(port: u16, dir: &std::path::Path) -> Self {
        Self::launch(port, Some(dir.to_path_buf()), None)
    }

    /// TLS only (`--tls-port`, no plain port), with `files` as its
    /// certificate; clients need no certificate of their own.
    pub fn start_tls(port: u16, files: tls::ServerFiles) -> Self {
        Self::launch(port, None, Some(files))
    }

    fn launch(
        port: u16,
        aof_dir: Option<std::path::PathBuf>,
        tls: Option<tls::ServerFiles>,
    ) -> Self {
        let mut cmd = Command::new("redis-server");
        match &tls {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            Some(f) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&f.cert)
                    .arg("--tls-key-file")
                    .arg(&f.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&f.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        cmd.args(["--bind", "127.0.0.1", "--save", ""]);
        match &aof_dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        Self {
            child: Some(child),
            port,
            aof_dir,
            tls,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (and the same AOF directory).
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::launch(self.port, self.aof_dir.clone(), self.tls.clone());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test: a SQLite file in a temporary
/// directory, or a new database on the local Postgres server
/// (`PAYGATE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`),
/// dropped with the value.
pub struct TestDb {
    pub url: String,
    pub kind: DbKind,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

fn postgres_base() -> String {
    std::env::var("PAYGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Runs each statement on its own (CREATE/DROP DATABASE refuse a transaction).
fn psql(statements: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("psql");
    cmd.args([
        &format!("{}/postgres", postgres_base()),
        "-v",
        "ON_ERROR_STOP=1",
        "-q",
    ]);
    for s in statements {
        cmd.args(["-c", s]);
    }
    cmd.output()
        .expect("psql (postgresql-client) must be installed")
}

impl TestDb {
    pub fn new(kind: DbKind) -> Self {
        match kind {
            DbKind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Self {
                    url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
                    kind,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            DbKind::Postgres => {
                let name = format!(
                    "paygate_t{}_{}",
                    std::process::id(),
                    NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let out = psql(&[
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    &format!("CREATE DATABASE {name}"),
                ]);
                assert!(
                    out.status.success(),
                    "creating Postgres database {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Self {
                    url: format!("{}/{name}", postgres_base()),
                    kind,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = psql(&[&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")]);
        }
    }
}

/// Runs each named `async fn(DbKind)` once on SQLite and once on Postgres,
/// as `sqlite::<name>` and `postgres::<name>` tests. The calling crate needs
/// tokio as a dev-dependency.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
               async fn $name() { super::$name($crate::DbKind::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
               async fn $name() { super::$name($crate::DbKind::Postgres).await } )*
        }
    };
}

/// A private PostgreSQL server on a free port, for tests that stop and start
/// it (the shared one on 5432 must stay up for the others). Runs as the
/// `postgres` system user when the test runs as root (initdb refuses root).
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    data: tempfile::TempDir,
    /// `ssl = on` with these files (copied into the data directory).
    ssl: bool,
}

fn pg_bin(name: &str) -> std::path::PathBuf {
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name)
}

fn as_postgres(program: std::path::PathBuf) -> Command {
    // `id -u` rather than libc: this crate forbids unsafe code.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// `ssl = on`, serving `files`' certificate (plain connections are
    /// still accepted: clients choose with `sslmode`).
    pub fn start_with_ssl(files: &tls::ServerFiles) -> Self {
        Self::start_with(Some(files))
    }

    fn start_with(ssl: Option<&tls::ServerFiles>) -> Self {
        let data = tempfile::tempdir().unwrap();
        if let Some(f) = ssl {
            // The server reads them as its own user; the key must be 0600.
            std::fs::copy(&f.cert, data.path().join("server.crt")).unwrap();
            std::fs::copy(&f.key, data.path().join("server.key")).unwrap();
            let _ = Command::new("chmod")
                .arg("600")
                .arg(data.path().join("server.key"))
                .status();
        }
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(data.path())
            .status();
        let out = as_postgres(pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(data.path().join("db"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Self {
            child: None,
            port: cluster_port(),
            data,
            ssl: ssl.is_some(),
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let mut cmd = as_postgres(pg_bin("postgres"));
        if self.ssl {
            cmd.args(["-c", "ssl=on", "-c"])
                .arg(format!(
                    "ssl_cert_file={}",
                    self.data.path().join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.data.path().join("server.key").display()
                ));
        }
        let child = cmd
            .arg("-D")
            .arg(self.data.path().join("db"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
            ])
            .arg(format!(
                "unix_socket_directories={}",
                self.data.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Command::new(pg_bin("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "postgres on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash would (the postmaster and its
    /// backends stop without a checkpoint: `pg_ctl stop -m immediate`).
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = as_postgres(pg_bin("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data.path().join("db"))
            .output();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
