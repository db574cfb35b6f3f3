//! `paygate serve --demo` starts, prints a working admin token and keys, and
//! the README walkthrough's 200 / 401 / 403 / 429 / 402 and x402 payment
//! happen as written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

/// Starts `paygate serve --demo <args>` with `env`, and returns it with the
/// lines it printed up to the first that contains `last`.
async fn start_demo(
    args: &[&str],
    env: &[(&str, String)],
    last: &'static str,
) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["serve", "--demo"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PAYGATE_GATEWAY__SHUTDOWN_GRACE_SECONDS", "0")
        .env("PAYGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains(last);
            out.push(line);
            if done {
                break;
            }
        }
        out
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .unwrap()
        .unwrap();
    (child, lines)
}

/// The value after `prefix` on the line that starts with it.
fn field(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_walkthrough() {
    let (gw_port, admin_port) = (free_port(), free_port());
    let (child, lines) = start_demo(
        &[],
        &[
            ("PAYGATE_GATEWAY__LISTEN", format!("127.0.0.1:{gw_port}")),
            ("PAYGATE_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}")),
        ],
        "try: curl",
    )
    .await;
    let field = |prefix: &str| field(&lines, prefix);
    let (token, free, payg) = (field("admin token"), field("key free"), field("key payg"));
    let advanced = field("key advanced");
    assert!(free.starts_with("pg_live_") && free.len() == 40, "{free}");
    let gw = format!("http://127.0.0.1:{gw_port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = |path: &'static str, key: Option<String>| {
        let client = client.clone();
        let gw = gw.clone();
        async move {
            let mut req = client.get(format!("{gw}{path}"));
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            req.send().await.map(|r| r.status().as_u16())
        }
    };
    // The gateway listener comes up beside the admin API; wait for it.
    while status("/v1/prices/AAPL", Some(free.clone())).await.is_err() {
        assert!(Instant::now() < deadline, "demo gateway did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // That call was the free customer's first (200); four more fill the burst of 5.
    assert_eq!(status("/v1/prices/AAPL", None).await.unwrap(), 401);
    assert_eq!(
        status("/v1/signals/AAPL", Some(free.clone()))
            .await
            .unwrap(),
        403
    );
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(status("/v1/indices", Some(free.clone())).await.unwrap());
    }
    assert!(codes.contains(&200) && codes.ends_with(&[429]), "{codes:?}");
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(
            status("/v1/signals/MSFT", Some(payg.clone()))
                .await
                .unwrap(),
        );
    }
    assert_eq!(codes, vec![200, 200, 200, 402]);
    let balance = |customer: &'static str| {
        let client = client.clone();
        let token = token.clone();
        async move {
            client
                .get(format!(
                    "http://127.0.0.1:{admin_port}/admin/v1/customers/{customer}/balance"
                ))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let bal = balance("demo-payg").await;
    assert_eq!(bal["credits_micros"], 0, "{bal}");

    // The stream: a WebSocket of price ticks, one unit each.
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{gw_port}/v1/stream/AAPL")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-api-key", advanced.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    for seq in 1..=2 {
        let tick = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let tick: serde_json::Value = serde_json::from_str(tick.to_text().unwrap()).unwrap();
        assert_eq!(
            (tick["symbol"].as_str(), tick["seq"].as_u64()),
            (Some("AAPL"), Some(seq))
        );
    }
    ws.close(None).await.unwrap();
    drop(ws);
    // The upgrade and at least the two ticks read (a third may have been on its way).
    common::eventually("the stream's units", Duration::from_secs(10), || async {
        let used = balance("demo-advanced").await["quota"]["used"].as_u64();
        (used >= Some(3)).then_some(())
    })
    .await;

    // x402 on the signals route, settled by the demo's simulated facilitator.
    assert_eq!(status("/v1/signals/AAPL", None).await.unwrap(), 402);
    let pay = paygate_testkit::x402::PaymentSpec::new(
        "0x857b06519E91e3A54538791bDbb0E22373e36b66",
        17_000,
    );
    let paid = |p: String| {
        let (client, gw) = (client.clone(), gw.clone());
        async move {
            client
                .get(format!("{gw}/v1/signals/AAPL"))
                .header("x-payment", p)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = paid(pay.x_payment()).await;
    assert_eq!(resp.status().as_u16(), 200);
    let settled = paygate_testkit::x402::decode_header(
        resp.headers()["x-payment-response"].to_str().unwrap(),
    );
    assert_eq!(settled["success"], true, "{settled}");
    let again = paid(pay.x_payment()).await;
    assert_eq!(again.status().as_u16(), 402, "a payment pays once");
    common::terminate(child).await;
}

/// `serve --demo --tls`: HTTPS with a certificate made at start, whose path
/// is printed, and the README's `curl --cacert` call answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_https_with_the_certificate_it_prints() {
    let (gw_port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let (child, lines) = start_demo(
        &["--tls"],
        &[
            ("PAYGATE_GATEWAY__LISTEN", format!("127.0.0.1:{gw_port}")),
            (
                "PAYGATE_GATEWAY__TLS__LISTEN",
                format!("127.0.0.1:{tls_port}"),
            ),
            ("PAYGATE_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}")),
        ],
        "try: curl --cacert",
    )
    .await;
    let field = |prefix: &str| field(&lines, prefix);
    let cert = field("certificate");
    let cert = cert.split_whitespace().next().unwrap().to_string();
    let key = field("key premium");
    assert!(field("https").ends_with(&format!(":{tls_port}")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["--cacert", &cert, "-H", &format!("X-API-Key: {key}")])
            .arg(format!("https://localhost:{tls_port}/v1/prices/AAPL"))
            .output()
            .await
            .unwrap();
        if out.stdout == b"200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS demo call: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    common::terminate(child).await;
}
