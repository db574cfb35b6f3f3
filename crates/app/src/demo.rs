//! `paygate serve --demo`: a sample market-data upstream inside the process,
//! the four demo plans (config/demo-plans.json) seeded through the admin API, one customer and
//! one key per plan, printed at start. State lives in a temporary database
//! that is removed on exit.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use http::Request;
use paygate_config::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::AppError;

fn demo_error(e: impl std::fmt::Display) -> AppError {
    AppError::Demo(e.to_string())
}

pub struct DemoUpstream {
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl DemoUpstream {
    /// Starts the sample upstream on a free loopback port, on the current runtime.
    pub async fn start() -> Result<Self, AppError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(demo_error)?;
        let addr = listener.local_addr().map_err(demo_error)?;
        tokio::spawn(async move {
            let app = market_data().merge(crate::demo_facilitator::router());
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "demo upstream stopped");
            }
        });
        Ok(Self {
            addr,
            dir: tempfile::tempdir()
                .map_err(|e| demo_error(format!("creating a temporary directory: {e}")))?,
        })
    }

    /// The demo configuration; `PAYGATE_<SECTION>__<KEY>` variables still
    /// apply. With `tls`, a self-signed certificate for localhost and
    /// 127.0.0.1 is written beside the database and served on 8443.
    pub fn config(&self, tls: bool) -> Result<Config, AppError> {
        let db = self.dir.path().join("demo.db");
        let tls_section = if tls {
            self.tls_section()?
        } else {
            String::new()
        };
        let text = format!(
            r#"
[database]
url = "sqlite://{db}"
{tls_section}
[[upstreams]]
name = "market"
targets = ["{addr}"]
health_check = {{ path = "/health", interval_ms = 1000 }}

[[routes]]
id = "prices"
path_prefix = "/v1/prices"
upstream = "market"
methods = ["GET"]

[[routes]]
id = "indices"
path_prefix = "/v1/indices"
upstream = "market"
methods = ["GET"]

[[routes]]
id = "signals"
path_prefix = "/v1/signals"
upstream = "market"
methods = ["GET"]
# Callers without a key may pay per call with x402.
x402_price_micros = 17000

# x402 against the demo's SIMULATED facilitator: no money moves, no
# signature is checked.
[x402]
facilitator_url = "http://{addr}{facilitator}"
pay_to = "{pay_to}"

# A WebSocket of price ticks (one a second): the upgrade costs one call,
# each tick one more unit.
[[routes]]
id = "stream"
path_prefix = "/v1/stream"
upstream = "market"
methods = ["GET"]
ws_message_cost = 1
"#,
            db = db.display(),
            addr = self.addr,
            tls_section = tls_section,
            facilitator = crate::demo_facilitator::PATH,
            pay_to = DEMO_PAY_TO,
        );
        let mut config =
            paygate_config::parse(&text, std::env::vars()).map_err(AppError::Config)?;
        if let Some(x) = config.x402.as_mut() {
            x.simulated = true;
        }
        Ok(config)
    }

    /// `[gateway]` with HTTPS beside plain HTTP, and the certificate files.
    fn tls_section(&self) -> Result<String, AppError> {
        let issued =
            paygate_tls::self_signed(&["localhost", "127.0.0.1"], paygate_tls::Validity::days(30))
                .map_err(demo_error)?;
        let cert = self.dir.path().join("demo-tls.crt");
        let key = self.dir.path().join("demo-tls.key");
        std::fs::write(&cert, issued.cert_pem()).map_err(demo_error)?;
        std::fs::write(&key, issued.key_pem()).map_err(demo_error)?;
        Ok(format!(
            r#"
[gateway]
listen = "127.0.0.1:8080"

[gateway.tls]
listen = "127.0.0.1:8443"
cert_path = "{cert}"
key_path = "{key}"
"#,
            cert = cert.display(),
            key = key.display(),
        ))
    }

    /// Seeds plans, customers, keys and credits through the admin API `api`
    /// (called without a socket) and prints them.
    pub async fn seed(&self, api: Router, token: &str, config: &Config) -> Result<(), AppError> {
        let call = |method: &'static str, path: String, body: Value| {
            let api = api.clone();
            let token = token.to_owned();
            async move {
                let req = Request::builder()
                    .method(method)
                    .uri(path.clone())
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .map_err(demo_error)?;
                let resp = api.oneshot(req).await.map_err(demo_error)?;
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .map_err(demo_error)?;
                if !status.is_success() {
                    return Err(demo_error(format!(
                        "seeding {path}: {status} {}",
                        String::from_utf8_lossy(&bytes)
                    )));
                }
                serde_json::from_slice::<Value>(&bytes).map_err(demo_error)
            }
        };
        for plan in plans()? {
            call("POST", "/admin/v1/plans".into(), plan).await?;
        }
        let mut keys = Vec::new();
        for plan in ["free", "advanced", "premium", "payg"] {
            let id = format!("demo-{plan}");
            call(
                "POST",
                "/admin/v1/customers".into(),
                json!({"id": id, "name": format!("Demo {plan}"), "email": format!("{plan}@demo.example"), "plan_id": plan}),
            )
            .await?;
            let key = call("POST", format!("/admin/v1/customers/{id}/keys"), json!({})).await?;
            keys.push((plan, key["key"].as_str().unwrap_or_default().to_string()));
        }
        // Enough prepaid credit for three calls, so the 402 is one curl away.
        call(
            "POST",
            "/admin/v1/customers/demo-payg/credits".into(),
            json!({"amount_micros": 51_000, "reference": "demo-welcome"}),
        )
        .await?;

        // One write of the whole banner: a reader that stops reading (a
        // pipe closed after the keys) must not make the demo fail.
        let mut banner = String::new();
        macro_rules! line {
            ($($arg:tt)*) => {{
                banner.push_str(&format!($($arg)*));
                banner.push('\n');
            }};
        }
        let gateway = config
            .gateway
            .plain_listen()
            .map_or_else(String::new, |a| a.to_string());
        line!("paygate demo");
        line!("  gateway      http://{gateway}");
        if let Some(t) = &config.gateway.tls {
            line!("  https        https://{}", t.listen);
            line!(
                "  certificate  {} (self-signed, for localhost and 127.0.0.1)",
                t.cert_path
            );
        }
        line!("  admin        http://{}", config.admin.listen);
        line!("  admin token  {token}");
        for (plan, key) in keys {
            line!("  key {plan:<9}{key}");
        }
        line!("  stream: websocat -H 'X-API-Key: <advanced key>' ws://{gateway}/v1/stream/AAPL");
        line!("  try: curl -H 'X-API-Key: <key>' http://{gateway}/v1/prices/AAPL");
        if let Some(t) = &config.gateway.tls {
            line!(
                "  try: curl --cacert {} -H 'X-API-Key: <key>' https://localhost:{}/v1/prices/AAPL",
                t.cert_path,
                t.listen.port()
            );
        }
        if config.x402.as_ref().is_some_and(|x| x.simulated) {
            line!(
                "  x402: /v1/signals takes payments without a key, settled by a SIMULATED \
                 facilitator (no money moves; see README: Paying per call with x402)"
            );
        }
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        }
        Ok(())
    }
}

/// The demo's x402 payee (a made-up address: the facilitator is simulated).
const DEMO_PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

/// The four demo plans; the billing tests script a month on the same file.
const PLANS: &str = include_str!("../../../config/demo-plans.json");

fn plans() -> Result<Vec<Value>, AppError> {
    serde_json::from_str(PLANS).map_err(demo_error)
}

// ---- the sample upstream ----

fn market_data() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/prices/{symbol}", get(price))
        .route("/v1/indices", get(indices))
        .route("/v1/signals/{symbol}", get(signal))
        .route("/v1/stream/{symbol}", get(stream))
}

/// A price tick a second for as long as the client listens.
async fn stream(Path(symbol): Path<String>, ws: WebSocketUpgrade) -> axum::response::Response {
    let symbol = symbol.to_ascii_uppercase();
    ws.on_upgrade(move |mut socket| async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut seq: u64 = 0;
        loop {
            tokio::select! {
                _ = every.tick() => {
                    seq += 1;
                    let Json(mut tick) = price(Path(symbol.clone())).await;
                    tick["seq"] = json!(seq);
                    if socket.send(Message::Text(tick.to_string().into())).await.is_err() {
                        return;
                    }
                }
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    })
}

/// A stable pseudo-random number per (symbol, minute), so prices move but repeat.
fn noise(symbol: &str, salt: u64) -> f64 {
    let minute = chrono::Utc::now().timestamp() as u64 / 60;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt ^ minute;
    for b in symbol.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (h % 10_000) as f64 / 10_000.0
}

fn base_price(symbol: &str) -> f64 {
    20.0 + noise(symbol, 1) * 480.0
}

async fn price(Path(symbol): Path<String>) -> Json<Value> {
    let symbol = symbol.to_ascii_uppercase();
    let p = base_price(&symbol);
    let change = (noise(&symbol, 7) - 0.5) * 0.04 * p;
    Json(json!({
        "symbol": symbol,
        "price": (p * 100.0).round() / 100.0,
        "change": (change * 100.0).round() / 100.0,
        "currency": "USD",
        "as_of": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
}

async fn indices() -> Json<Value> {
    let data: Vec<Value> = [
        ("SPX", "S&P 500", 5000.0),
        ("NDX", "Nasdaq 100", 17000.0),
        ("DJI", "Dow Jones", 38000.0),
    ]
    .iter()
    .map(|(sym, name, level)| {
        let l = level * (0.98 + noise(sym, 3) * 0.04);
        json!({"symbol": sym, "name": name, "level": (l * 100.0).round() / 100.0})
    })
    .collect();
    Json(json!({"data": data}))
}

async fn signal(Path(symbol): Path<String>) -> Json<Value> {
    let symbol = symbol.to_ascii_uppercase();
    let n = noise(&symbol, 11);
    let action = if n < 0.33 {
        "sell"
    } else if n < 0.66 {
        "hold"
    } else {
        "buy"
    };
    Json(json!({
        "symbol": symbol,
        "signal": action,
        "confidence": ((0.5 + noise(&symbol, 13) / 2.0) * 100.0).round() / 100.0,
        "horizon": "1d",
    }))
}
