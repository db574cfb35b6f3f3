//! A mock x402 facilitator on a free loopback port (tests only): it checks
//! the fields of what it is sent, can be told to refuse, to fail the
//! settlement, to answer `success: false` with HTTP 200, to hang or to talk
//! nonsense, and counts what it was asked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// How the mock answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Verifies payments that cover the requirements; settles them.
    Honest,
    /// `/verify` answers `isValid: false` with this reason.
    Invalid(String),
    /// `/settle` answers HTTP 200 with `success: false` and this reason.
    SettleFails(String),
    /// The first `n` settles never answer; later ones do (honestly).
    SettleHangs(u64),
    /// Nothing answers.
    Hang,
    /// Answers that are not JSON.
    Garbage,
}

struct Mock {
    mode: parking_lot::Mutex<Mode>,
    verifies: AtomicU64,
    settles: AtomicU64,
    last_settle: parking_lot::Mutex<Option<Value>>,
}

#[derive(Clone)]
pub struct MockFacilitator {
    pub addr: SocketAddr,
    state: Arc<Mock>,
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// `Some(reason)` when the request is not what a facilitator takes or the
/// payment does not cover the requirements.
fn problem(req: &Value) -> Option<String> {
    let version = req.get("x402Version").and_then(Value::as_u64)?;
    let payload = req.get("paymentPayload")?;
    let reqs = req.get("paymentRequirements")?;
    let value = field(payload, &["payload", "authorization", "value"])
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u128>().ok());
    let required = match version {
        1 => reqs.get("maxAmountRequired"),
        2 => reqs.get("amount"),
        _ => return Some("unsupported_version".into()),
    }
    .and_then(Value::as_str)
    .and_then(|s| s.parse::<u128>().ok());
    match (value, required) {
        (Some(v), Some(r)) if v >= r => None,
        (Some(_), Some(_)) => Some("invalid_exact_evm_payload_authorization_value".into()),
        _ => Some("invalid_payload".into()),
    }
}

fn payer(req: &Value) -> Value {
    field(req, &["paymentPayload", "payload", "authorization", "from"])
        .cloned()
        .unwrap_or(Value::Null)
}

async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::GATEWAY_TIMEOUT.into_response()
}

async fn verify(State(s): State<Arc<Mock>>, body: axum::body::Bytes) -> Response {
    s.verifies.fetch_add(1, Ordering::SeqCst);
    let mode = s.mode.lock().clone();
    match mode {
        Mode::Hang => return hang().await,
        Mode::Garbage => return (StatusCode::BAD_GATEWAY, "<html>oops</html>").into_response(),
        _ => {}
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    let reason = match (&mode, problem(&req)) {
        (_, Some(p)) => Some(p),
        (Mode::Invalid(r), None) => Some(r.clone()),
        _ => None,
    };
    let answer = match reason {
        Some(r) => json!({"isValid": false, "invalidReason": r, "payer": payer(&req)}),
        None => json!({"isValid": true, "payer": payer(&req)}),
    };
    axum::Json(answer).into_response()
}

async fn settle(State(s): State<Arc<Mock>>, body: axum::body::Bytes) -> Response {
    let n = s.settles.fetch_add(1, Ordering::SeqCst);
    let mode = s.mode.lock().clone();
    match mode {
        Mode::Hang => return hang().await,
        Mode::SettleHangs(k) if n < k => return hang().await,
        Mode::Garbage => return (StatusCode::BAD_GATEWAY, "<html>oops</html>").into_response(),
        _ => {}
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    *s.last_settle.lock() = Some(req.clone());
    let network = field(&req, &["paymentRequirements", "network"])
        .cloned()
        .unwrap_or(Value::Null);
    let answer = match (&mode, problem(&req)) {
        (_, Some(p)) => {
            json!({"success": false, "errorReason": p, "payer": payer(&req), "network": network})
        }
        (Mode::SettleFails(r), None) => {
            json!({"success": false, "errorReason": r, "payer": payer(&req), "network": network})
        }
        _ => json!({"success": true, "transaction": format!("0x{:064x}", n + 1),
                    "network": network, "payer": payer(&req)}),
    };
    axum::Json(answer).into_response()
}

impl MockFacilitator {
    pub async fn start(mode: Mode) -> Self {
        let state = Arc::new(Mock {
            mode: parking_lot::Mutex::new(mode),
            verifies: AtomicU64::new(0),
            settles: AtomicU64::new(0),
            last_settle: parking_lot::Mutex::new(None),
        });
        let app = axum::Router::new()
            .route("/verify", axum::routing::post(verify))
            .route("/settle", axum::routing::post(settle))
            .with_state(Arc::clone(&state));
        let addr = crate::serve_on_loopback(app).await;
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock() = mode;
    }

    pub fn verifies(&self) -> u64 {
        self.state.verifies.load(Ordering::SeqCst)
    }

    /// Settle requests received, answered or not.
    pub fn settles(&self) -> u64 {
        self.state.settles.load(Ordering::SeqCst)
    }

    /// The body of the last settle request that was answered.
    pub fn last_settle(&self) -> Option<Value> {
        self.state.last_settle.lock().clone()
    }
}
