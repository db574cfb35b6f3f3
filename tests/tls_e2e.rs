//! TLS end to end, with a private CA made per test: HTTPS callers over
//! HTTP/1.1 and HTTP/2 (curl), SNI, a plain-HTTP client on the TLS port,
//! HTTPS upstreams (private CA, wrong CA, mutual TLS, health checks,
//! connection reuse), the admin listener over HTTPS, certificates re-read
//! on SIGHUP under load, start-up errors and the expiry gauge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use axum::{Json, Router};
use common::{eventually, free_port, mock_upstream, routes_for, Paygate, TOKEN};
use paygate_testkit::tls::{presented_serial, serial_of, serve_https, Pki, ServerFiles, Validity};
use serde_json::{json, Value};

/// `[gateway.tls]` on a free port with `files`' certificate, plus `more`.
fn tls_section(files: &ServerFiles, more: &str) -> (u16, String) {
    let port = free_port();
    let text = format!(
        r#"
[gateway.tls]
listen = "127.0.0.1:{port}"
cert_path = "{cert}"
key_path = "{key}"
{more}
"#,
        cert = files.cert.display(),
        key = files.key.display(),
    );
    (port, text)
}

/// Starts paygate with `extra` and `[gateway.tls]` (`files`, plus `more`)
/// and waits until the HTTPS port accepts connections too.
async fn start_https(dir: &Path, extra: &str, files: &ServerFiles, more: &str) -> (Paygate, u16) {
    let (port, tls) = tls_section(files, more);
    let pg = Paygate::start(dir, &format!("{extra}{tls}")).await;
    listening("the HTTPS listener", port).await;
    (pg, port)
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
async fn listening(what: &str, port: u16) {
    eventually(what, Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// What curl saw: status, HTTP version, headers (lower-case names), body.
struct Curl {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One call with the curl binary (the client most users check an HTTPS
/// endpoint with), trusting only `ca`.
async fn curl(args: &[&str], ca: &Path, url: &str) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("h"), dir.path().join("b"));
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = String::from_utf8(out.stdout).unwrap();
    let (status, version) = w.split_once(' ').unwrap();
    let headers = std::fs::read_to_string(&headers)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        status: status.parse().unwrap(),
        version: version.to_string(),
        headers,
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_callers_over_http1_and_http2_are_answered_and_metered_alike() {
    let pki = Pki::new("callers");
    let files = pki.issue("gateway", &["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let (pg, port) = start_https(dir.path(), &routes_for(mock.addr), &files, "").await;
    let key = pg
        .customer_with_plan("acme", json!({"quota": {"calls": 100, "period": "month"}}))
        .await;
    let base = format!("https://localhost:{port}");
    let auth = format!("X-API-Key: {key}");

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let ok = curl(&[flag, "-H", &auth], &pki.ca_path, &format!("{base}/v1/a")).await;
        assert_eq!(
            (ok.status, ok.version.as_str()),
            (200, version),
            "{}",
            ok.body
        );
        assert_eq!(ok.json()["path"], "/v1/a");
        assert!(ok.header("x-request-id").is_some_and(|v| !v.is_empty()));
        assert_eq!(ok.header("ratelimit-limit"), Some("100000"));

        let no_key = curl(&[flag], &pki.ca_path, &format!("{base}/v1/a")).await;
        assert_eq!((no_key.status, no_key.version.as_str()), (401, version));
        assert_eq!(no_key.json()["error"]["code"], "missing_credentials");

        let nowhere = curl(&[flag, "-H", &auth], &pki.ca_path, &format!("{base}/x")).await;
        assert_eq!(nowhere.status, 404);
        assert_eq!(nowhere.json()["error"]["code"], "no_route");

        // A body over gateway.max_body_bytes (1024 in these tests): 413. At
        // 200 KB the client is still uploading when the answer comes (past
        // HTTP/2's 64 KB window): it must still get the answer, not a reset.
        let upload = dir.path().join("upload.bin");
        std::fs::write(&upload, vec![b'x'; 200_000]).unwrap();
        let big = curl(
            &[
                flag,
                "-H",
                &auth,
                "--data-binary",
                &format!("@{}", upload.display()),
            ],
            &pki.ca_path,
            &format!("{base}/v1/upload"),
        )
        .await;
        assert_eq!(big.status, 413, "{}", big.body);
        assert_eq!(big.json()["error"]["code"], "body_too_large");

        // The rate limit answers 429 with Retry-After.
        let slow = pg
            .customer_with_plan(
                &format!("slow-{version}").replace('.', "-"),
                json!({"rate_limit": {"requests": 1, "per": "minute", "burst": 1}}),
            )
            .await;
        let slow = format!("X-API-Key: {slow}");
        let first = curl(&[flag, "-H", &slow], &pki.ca_path, &format!("{base}/v1/a")).await;
        assert_eq!(first.status, 200);
        let limited = curl(&[flag, "-H", &slow], &pki.ca_path, &format!("{base}/v1/a")).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.json()["error"]["code"], "rate_limited");
        assert!(limited.header("retry-after").is_some());
    }
    // Plain HTTP stays beside HTTPS.
    assert_eq!(pg.get("/v1/b", &key).await.status(), 200);
    // One call per protocol and one plain; refusals before the customer is
    // known (401, 404) are nobody's usage.
    pg.expect_ledger("acme", 3, 0).await;
    let (_, me) = pg
        .admin("GET", "/admin/v1/customers/acme/balance", None)
        .await;
    assert_eq!(me["quota"]["used"], 3, "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sni_picks_the_certificate_of_the_name_asked_for() {
    let pki = Pki::new("sni");
    let default = pki.issue("default", &["localhost"]);
    let a = pki.issue("a", &["a.test"]);
    let wild = pki.issue("wild", &["*.b.test"]);
    let more = format!(
        r#"
[[gateway.tls.certs]]
server_name = "a.test"
cert_path = "{}"
key_path = "{}"

[[gateway.tls.certs]]
server_name = "*.b.test"
cert_path = "{}"
key_path = "{}"
"#,
        a.cert.display(),
        a.key.display(),
        wild.cert.display(),
        wild.key.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let (_pg, port) = start_https(dir.path(), &routes_for(mock.addr), &default, &more).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ca = pki.ca_path.clone();
    let seen = tokio::task::spawn_blocking(move || {
        ["localhost", "a.test", "x.b.test", "c.test"].map(|name| presented_serial(addr, name, &ca))
    })
    .await
    .unwrap();
    assert_eq!(seen[0].as_deref(), Ok(serial_of(&default.cert).as_str()));
    assert_eq!(seen[1].as_deref(), Ok(serial_of(&a.cert).as_str()));
    assert_eq!(seen[2].as_deref(), Ok(serial_of(&wild.cert).as_str()));
    // No entry for c.test: the default certificate, which is not valid for it.
    assert!(
        seen[3]
            .as_ref()
            .is_err_and(|e| e.contains("certificate verify failed")),
        "{:?}",
        seen[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_http_client_or_an_old_tls_one_gets_no_answer_and_no_bill() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("plain");
    let files = pki.issue("gateway", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let (pg, port) = start_https(
        dir.path(),
        &routes_for(mock.addr),
        &files,
        "min_version = \"1.3\"",
    )
    .await;
    let key = pg.customer_with_plan("acme", json!({})).await;
    // min_version = "1.3": a client that offers at most TLS 1.2 is refused.
    assert!(
        curl_fails(
            &["--tls-max", "1.2"],
            &pki.ca_path,
            &format!("https://localhost:{port}/v1/a")
        )
        .await
    );

    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(
        format!("GET /v1/a HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the TLS port must close a plain-HTTP connection"
    );
    assert!(
        !got.starts_with(b"HTTP/"),
        "no HTTP answer on the TLS port: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(mock.hits(), 0, "nothing forwarded");
    // The gateway is unharmed and bills only the call that got through.
    let ok = curl(
        &["-H", &format!("X-API-Key: {key}")],
        &pki.ca_path,
        &format!("https://localhost:{port}/v1/a"),
    )
    .await;
    assert_eq!(ok.status, 200);
    pg.expect_ledger("acme", 1, 0).await;
}

/// An HTTPS upstream that records the client port of every call (one port
/// for many calls: the connection was reused) and its health checks.
#[derive(Clone, Default)]
struct Secure {
    ports: Arc<Mutex<Vec<u16>>>,
    health: Arc<AtomicU64>,
}

async fn secure_upstream(files: &ServerFiles, client_ca: Option<&Path>) -> (SocketAddr, Secure) {
    let s = Secure::default();
    let app = Router::new()
        .route(
            "/health",
            get(|State(s): State<Secure>| async move {
                s.health.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .fallback(
            |State(s): State<Secure>, ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                s.ports.lock().unwrap().push(peer.port());
                Json(json!({"secure": true}))
            },
        )
        .with_state(s.clone());
    let addr = serve_https(app, files, client_ca).await;
    (addr, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_upstreams_are_verified_reused_and_health_checked() {
    let pki = Pki::new("upstreams");
    let other = Pki::new("other");
    let files = pki.issue("upstream", &["localhost"]);
    let (plain_tls, plain_seen) = secure_upstream(&files, None).await;
    let (mtls, mtls_seen) = secure_upstream(&files, Some(&pki.ca_path)).await;
    let client = pki.issue("client", &["paygate-client"]);
    let upstream = |name: &str, addr: SocketAddr, extra: &str| {
        format!(
            r#"
[[upstreams]]
name = "{name}"
targets = ["localhost:{port}"]
tls = true
read_timeout_ms = 2000
{extra}

[[routes]]
id = "{name}"
path_prefix = "/v1/{name}"
upstream = "{name}"
"#,
            port = addr.port()
        )
    };
    let ca = format!("ca_path = \"{}\"", pki.ca_path.display());
    let cert = format!(
        "client_cert_path = \"{}\"\nclient_key_path = \"{}\"",
        client.cert.display(),
        client.key.display()
    );
    let config = [
        upstream(
            "verified",
            plain_tls,
            &format!("{ca}\nhealth_check = {{ path = \"/health\", interval_ms = 100 }}"),
        ),
        upstream(
            "wrongca",
            plain_tls,
            &format!("ca_path = \"{}\"", other.ca_path.display()),
        ),
        upstream("mutual", mtls, &format!("{ca}\n{cert}")),
        upstream("anonymous", mtls, &ca),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let pg = Paygate::start(dir.path(), &config).await;
    let key = pg.customer_with_plan("acme", json!({})).await;

    // Health checks reach the upstream over TLS, and keep it in rotation.
    eventually(
        "health checks over TLS",
        Duration::from_secs(10),
        || async { (plain_seen.health.load(Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    for _ in 0..10 {
        let resp = pg.get("/v1/verified/q", &key).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["secure"], true);
    }
    let ports: HashSet<u16> = plain_seen.ports.lock().unwrap().iter().copied().collect();
    assert_eq!(ports.len(), 1, "ten calls, one TLS connection: {ports:?}");

    let resp = pg.get("/v1/wrongca/q", &key).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(common::error_code(resp).await, "upstream_unavailable");

    let resp = pg.get("/v1/mutual/q", &key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mtls_seen.ports.lock().unwrap().len(), 1);
    let resp = pg.get("/v1/anonymous/q", &key).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(common::error_code(resp).await, "upstream_unavailable");

    // Billed: the ten verified calls and the mutual one; the 502s are not.
    pg.expect_ledger("acme", 11, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_listener_serves_https() {
    let pki = Pki::new("admin");
    let files = pki.issue("admin", &["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, gw_port) = (free_port(), free_port());
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
listen = "127.0.0.1:{gw}"
shutdown_grace_seconds = 0

[admin]
listen = "127.0.0.1:{admin_port}"

[admin.tls]
cert_path = "{cert}"
key_path = "{key}"
min_version = "1.3"

[database]
url = "sqlite://{db}"
"#,
            gw = gw_port,
            cert = files.cert.display(),
            key = files.key.display(),
            db = dir.path().join("l.db").display(),
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("PAYGATE_ADMIN_TOKEN", TOKEN)
        .env("PAYGATE_LOG", "warn")
        .spawn()
        .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_path).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://localhost:{admin_port}");
    eventually("admin over HTTPS", Duration::from_secs(30), || async {
        let r = client.get(format!("{url}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    // The gateway listens once Pingora runs, which is also when SIGTERM
    // starts to mean "drain" (before, it ends the starting process).
    listening("the gateway", gw_port).await;
    let plans = client
        .get(format!("{url}/admin/v1/plans"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(plans.status(), 200);
    // min_version = "1.3": a TLS 1.2 client is refused.
    let old = curl_fails(
        &["--tls-max", "1.2"],
        &pki.ca_path,
        &format!("{url}/healthz"),
    )
    .await;
    assert!(
        old,
        "a TLS 1.2 client must be refused by a 1.3-only listener"
    );
    common::terminate(child).await;
}

/// True when curl could not complete the call.
async fn curl_fails(args: &[&str], ca: &Path, url: &str) -> bool {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(url)
        .output()
        .await
        .unwrap();
    !out.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_are_reread_on_sighup_under_load_without_a_failed_call() {
    let pki = Pki::new("rotation");
    let first = pki.issue("gateway", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let (pg, port) = start_https(dir.path(), &routes_for(mock.addr), &first, "").await;
    let key = pg.customer_with_plan("acme", json!({})).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let serial_now = {
        let ca = pki.ca_path.clone();
        move || {
            let ca = ca.clone();
            async move {
                tokio::task::spawn_blocking(move || presented_serial(addr, "localhost", &ca))
                    .await
                    .unwrap()
            }
        }
    };
    assert_eq!(serial_now().await.unwrap(), serial_of(&first.cert));

    // Load: pooled connections (kept across the swap) and a fresh
    // connection per call (a handshake per call, some during the swap).
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_path).unwrap()).unwrap();
    let clients = [64, 0].map(|idle| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .pool_max_idle_per_host(idle)
            .build()
            .unwrap()
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..8 {
        let client = clients[i % 2].clone();
        let (stop, ok, failed, key) = (stop.clone(), ok.clone(), failed.clone(), key.clone());
        let url = format!("https://localhost:{port}/v1/load");
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).header("x-api-key", &key).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    Ok(r) => panic!("status {} during the swap", r.status()),
                    Err(e) => {
                        eprintln!("call failed during the swap: {e}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    eventually("load running", Duration::from_secs(10), || async {
        (ok.load(Ordering::SeqCst) > 50).then_some(())
    })
    .await;

    // A broken file is refused and the old certificate stays.
    std::fs::write(&first.cert, b"garbage").unwrap();
    hup(pg.pid());
    eventually(
        "a failed reload counted",
        Duration::from_secs(10),
        || async {
            pg.metrics()
                .await
                .contains("paygate_tls_reloads_total{outcome=\"error\"} 1")
                .then_some(())
        },
    )
    .await;
    let old_serial = serial_now().await.unwrap();
    assert_ne!(old_serial, "", "still serving");

    // The new certificate, written over the same paths, then SIGHUP.
    let second = pki.issue("gateway", &["localhost"]);
    let new_serial = serial_of(&second.cert);
    assert_ne!(new_serial, old_serial);
    hup(pg.pid());
    eventually(
        "the new certificate served",
        Duration::from_secs(10),
        || {
            let serial_now = serial_now.clone();
            let new_serial = new_serial.clone();
            async move { (serial_now().await.ok()? == new_serial).then_some(()) }
        },
    )
    .await;
    let at_swap = ok.load(Ordering::SeqCst);
    eventually("load after the swap", Duration::from_secs(10), || async {
        (ok.load(Ordering::SeqCst) > at_swap + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no call may fail");
    pg.expect_ledger("acme", ok.load(Ordering::SeqCst), 0).await;
    assert!(pg
        .metrics()
        .await
        .contains("paygate_tls_reloads_total{outcome=\"ok\"} 1"));
}

fn hup(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `paygate serve` on a config that must not start; returns stderr.
async fn refused_start(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             [database]\nurl = \"sqlite://{}\"\n{config}",
            free_port(),
            free_port(),
            dir.path().join("l.db").display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("PAYGATE_ADMIN_TOKEN", TOKEN)
        .env("PAYGATE_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("paygate must refuse to start")
        .unwrap();
    assert!(!status.success());
    let mut err = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unusable_certificates_stop_the_start_naming_their_key() {
    let pki = Pki::new("bad");
    let good = pki.issue("good", &["localhost"]);
    let other = pki.issue("other", &["localhost"]);
    let expired = pki.issue_valid(
        "expired",
        &["localhost"],
        Validity {
            from: -10 * 86_400,
            until: -60,
        },
    );
    let section = |cert: &Path, key: &Path| {
        format!(
            "[gateway.tls]\nlisten = \"127.0.0.1:{}\"\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            free_port(),
            cert.display(),
            key.display()
        )
    };
    let missing = pki.dir().join("missing.crt");
    let err = refused_start(&section(&missing, &good.key)).await;
    assert!(err.contains("gateway.tls.cert_path: cannot read"), "{err}");
    let err = refused_start(&section(&good.cert, &other.key)).await;
    assert!(
        err.contains("gateway.tls.key_path: the private key in"),
        "{err}"
    );
    let err = refused_start(&section(&expired.cert, &expired.key)).await;
    assert!(
        err.contains("gateway.tls.cert_path: the certificate in") && err.contains("expired"),
        "{err}"
    );
    let err = refused_start(&format!(
        "[admin.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        good.cert.display(),
        good.cert.display()
    ))
    .await;
    assert!(err.contains("admin.tls.key_path"), "{err}");
    let err = refused_start(&format!(
        "[[upstreams]]\nname = \"u\"\ntargets = [\"localhost:1\"]\ntls = true\nca_path = \"{}\"\n",
        missing.display()
    ))
    .await;
    assert!(err.contains("upstreams[0].ca_path: cannot read"), "{err}");
    // `tls = true` in front of a plain-HTTP target.
    let plain = mock_upstream().await;
    let err = refused_start(&format!(
        "[[upstreams]]\nname = \"u\"\ntargets = [\"{}\"]\ntls = true\nverify = false\n",
        plain.addr
    ))
    .await;
    assert!(
        err.contains("upstreams[0].tls: target") && err.contains("answers plain HTTP"),
        "{err}"
    );
}

#[test]
fn check_config_reads_the_certificates_too() {
    let pki = Pki::new("check");
    let good = pki.issue("good", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let check = |tls: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, tls).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let section = |key: &Path| {
        format!(
            "[gateway.tls]\nlisten = \"127.0.0.1:8443\"\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            good.cert.display(),
            key.display()
        )
    };
    let (code, out) = check(&section(&good.key));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&section(&pki.dir().join("gone.key")));
    assert_eq!(code, Some(2));
    assert!(out.contains("gateway.tls.key_path: cannot read"), "{out}");
    let (code, out) = check(&format!(
        "[[upstreams]]\nname = \"u\"\ntargets = [\"localhost:443\"]\ntls = true\n\
         client_cert_path = \"{}\"\nclient_key_path = \"{}\"\n",
        good.cert.display(),
        good.cert.display()
    ));
    assert_eq!(code, Some(2));
    assert!(out.contains("upstreams[0].client_key_path"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_near_its_end_is_measured() {
    let pki = Pki::new("expiry");
    let files = pki.issue_valid(
        "gateway",
        &["localhost"],
        Validity {
            from: -86_400,
            until: 7 * 86_400,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let started = Instant::now();
    let (pg, _) = start_https(dir.path(), &routes_for(mock.addr), &files, "").await;
    let metrics = pg.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("paygate_tls_cert_expiry_seconds{name=\"gateway\"}"))
        .unwrap_or_else(|| panic!("no expiry gauge in\n{metrics}"));
    let seconds: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let slack = started.elapsed().as_secs() as i64 + 120;
    assert!(
        (7 * 86_400 - slack..=7 * 86_400).contains(&seconds),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_a_tls_redis_and_a_tls_postgres_share_one_exact_quota() {
    let pki = Pki::new("stores");
    let files = pki.issue("stores", &["localhost", "127.0.0.1"]);
    let redis_port = paygate_testkit::cluster_port();
    let _redis = paygate_testkit::RedisServer::start_tls(redis_port, files.clone());
    let postgres = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || paygate_testkit::PostgresServer::start_with_ssl(&files))
            .await
            .unwrap()
    };
    // Verified against the test's CA, for the host name in the URL.
    let db_url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        postgres.url().replace("127.0.0.1", "localhost"),
        pki.ca_path.display()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ledger.url"), &db_url).unwrap();
    let mock = mock_upstream().await;
    let store = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"rediss://localhost:{redis_port}/0\"\n\
         tls_ca_path = \"{}\"\nkey_prefix = \"tls\"\ntimeout_ms = 500\n{}",
        pki.ca_path.display(),
        routes_for(mock.addr)
    );
    let a = Paygate::start_named(dir.path(), "a", &store, common::Wait::Ready).await;
    let b = Paygate::start_named(dir.path(), "b", &store, common::Wait::Ready).await;
    let key = a
        .customer_with_plan("acme", json!({"quota": {"calls": 30, "period": "month"}}))
        .await;
    eventually(
        "gateway b to know the key",
        Duration::from_secs(10),
        || async { (b.get("/v1/x", &key).await.status() != 401).then_some(()) },
    )
    .await;
    let calls = (0..60).map(|i| {
        let pg = if i % 2 == 0 { &a } else { &b };
        pg.get("/v1/x", &key)
    });
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    // The probe above may have spent one unit.
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((29..=30).contains(&ok), "{statuses:?}");
    // The rest: 402 quota_exhausted.
    assert_eq!(ok + statuses.iter().filter(|s| **s == 402).count(), 60);
    eventually(
        "every admitted call in the TLS ledger",
        Duration::from_secs(10),
        || async { (a.ledger_counts("acme").await.0 == 30).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_verify_full_refuses_a_server_of_another_ca() {
    let pki = Pki::new("pg");
    let other = Pki::new("other");
    let files = pki.issue("pg", &["localhost"]);
    let postgres = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || paygate_testkit::PostgresServer::start_with_ssl(&files))
            .await
            .unwrap()
    };
    let url = |ca: &Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            postgres.url().replace("127.0.0.1", "localhost"),
            ca.display()
        )
    };
    let db = paygate_billing::Database::connect(&url(&pki.ca_path)).await;
    assert!(db.is_ok(), "{:?}", db.err());
    let refused = paygate_billing::Database::connect(&url(&other.ca_path)).await;
    assert!(
        refused.is_err(),
        "a server signed by another CA must be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_over_https_is_metered_message_by_message() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let pki = Pki::new("wss");
    let files = pki.issue("gateway", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let routes = format!(
        "{}\n[[routes]]\nid = \"stream\"\npath_prefix = \"/v1/ticks\"\nupstream = \"mock\"\nws_message_cost = 1\n",
        routes_for(mock.addr)
    );
    let (pg, port) = start_https(dir.path(), &routes, &files, "").await;
    let key = pg
        .customer_with_plan(
            "acme",
            json!({"quota": {"calls": 1000, "period": "month"}, "max_websockets": 1}),
        )
        .await;
    let ca = native_tls::Certificate::from_pem(&std::fs::read(&pki.ca_path).unwrap()).unwrap();
    let tls = native_tls::TlsConnector::builder()
        .disable_built_in_roots(true)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let mut req = format!("wss://localhost:{port}/v1/ticks/9")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(tokio_tungstenite::Connector::NativeTls(tls)),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    let mut data = 0;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the stream stalled")
    {
        match m {
            Ok(Message::Text(_) | Message::Binary(_)) => data += 1,
            // After a Close, polling on answers it and ends the stream.
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(ws);
    assert_eq!(data, 9);
    // The upgrade and nine messages of one unit each.
    eventually(
        "quota used by the WebSocket",
        Duration::from_secs(10),
        || async {
            let (_, b) = pg
                .admin("GET", "/admin/v1/customers/acme/balance", None)
                .await;
            (b["quota"]["used"] == 10).then_some(())
        },
    )
    .await;
}
