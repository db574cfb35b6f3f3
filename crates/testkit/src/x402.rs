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
    /// `/settle` answers HTTP 400 with `success: false` and this reason.
    SettleRefused(String),
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
        (Mode::SettleRefused(r), None) => {
            let body = json!({"success": false, "errorReason": r, "payer": payer(&req),
                              "network": network});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
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

/// What a paying client signs: the fields of an EIP-3009 authorization
/// (the signature itself is opaque to paygate; the facilitator checks it).
#[derive(Debug, Clone)]
pub struct PaymentSpec {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: String,
    /// v1 network name (`base-sepolia`).
    pub network: String,
    /// v2 CAIP-2 id (`eip155:84532`).
    pub network_id: String,
    pub asset: String,
}

pub const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
pub const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";

impl PaymentSpec {
    /// A payment of `value` atomic units from `from` to [`PAY_TO`] on Base
    /// Sepolia, valid for ten minutes, with a nonce unique to this call.
    pub fn new(from: &str, value: u64) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Self {
            from: from.into(),
            to: PAY_TO.into(),
            value: value.to_string(),
            valid_after: now.saturating_sub(60),
            valid_before: now + 600,
            nonce: format!("0x{:056x}{:08x}", now, n),
            network: "base-sepolia".into(),
            network_id: "eip155:84532".into(),
            asset: ASSET.into(),
        }
    }

    fn payload(&self) -> Value {
        json!({
            "signature": format!("0x{}", "ab".repeat(65)),
            "authorization": {
                "from": self.from, "to": self.to, "value": self.value,
                "validAfter": self.valid_after.to_string(),
                "validBefore": self.valid_before.to_string(),
                "nonce": self.nonce,
            }
        })
    }

    /// The v1 document (`X-PAYMENT`).
    pub fn v1(&self) -> Value {
        json!({"x402Version": 1, "scheme": "exact", "network": self.network,
               "payload": self.payload()})
    }

    /// The v2 document (`PAYMENT-SIGNATURE`).
    pub fn v2(&self) -> Value {
        json!({"x402Version": 2,
               "accepted": {"scheme": "exact", "network": self.network_id, "amount": self.value,
                            "asset": self.asset, "payTo": self.to, "maxTimeoutSeconds": 60,
                            "extra": {"name": "USDC", "version": "2"}},
               "payload": self.payload()})
    }

    /// Base64 of a document, as the headers carry it.
    pub fn encode(doc: &Value) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(doc.to_string())
    }

    pub fn x_payment(&self) -> String {
        Self::encode(&self.v1())
    }

    pub fn payment_signature(&self) -> String {
        Self::encode(&self.v2())
    }
}

/// Decodes a base64 JSON header (`PAYMENT-REQUIRED`, `X-PAYMENT-RESPONSE`, …).
pub fn decode_header(raw: &str) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}
