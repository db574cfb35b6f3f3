//! A JWT issuer for tests: signing keys of every algorithm family (fixed
//! test-only keys in `keys/`) and a JWKS endpoint on a free port whose key
//! set a test can change, break and count fetches of.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const RSA1: &str = include_str!("../keys/rsa1.pem");
const RSA2: &str = include_str!("../keys/rsa2.pem");
const EC256: &str = include_str!("../keys/ec256.pem");
const EC384: &str = include_str!("../keys/ec384.pem");
const ED25519: &str = include_str!("../keys/ed25519.pem");
pub const RSA1_PUBLIC: &str = include_str!("../keys/rsa1.pub.pem");
pub const RSA2_PUBLIC: &str = include_str!("../keys/rsa2.pub.pem");
pub const EC256_PUBLIC: &str = include_str!("../keys/ec256.pub.pem");
pub const ED25519_PUBLIC: &str = include_str!("../keys/ed25519.pub.pem");
/// The HMAC secret of [`SigningKey::hmac`].
pub const HMAC_SECRET: &str = "test-only-hmac-secret-0123456789abcdef";

/// Which of the fixed key pairs to sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    Rsa1,
    Rsa2,
    Ec256,
    Ec384,
    Ed25519,
    Hmac,
}

pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub pair: Pair,
    encoding: EncodingKey,
}

impl SigningKey {
    /// A key for `alg` (RS/PS: the first RSA pair; ES256/ES384: P-256/P-384;
    /// EdDSA: Ed25519; HS*: [`HMAC_SECRET`]) named `kid`.
    pub fn new(alg: Algorithm, kid: &str) -> Self {
        let pair = match alg {
            Algorithm::ES256 => Pair::Ec256,
            Algorithm::ES384 => Pair::Ec384,
            Algorithm::EdDSA => Pair::Ed25519,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Pair::Hmac,
            _ => Pair::Rsa1,
        };
        Self::with_pair(alg, kid, pair)
    }

    pub fn with_pair(alg: Algorithm, kid: &str, pair: Pair) -> Self {
        let encoding = match pair {
            Pair::Rsa1 => EncodingKey::from_rsa_pem(RSA1.as_bytes()),
            Pair::Rsa2 => EncodingKey::from_rsa_pem(RSA2.as_bytes()),
            Pair::Ec256 => EncodingKey::from_ec_pem(EC256.as_bytes()),
            Pair::Ec384 => EncodingKey::from_ec_pem(EC384.as_bytes()),
            Pair::Ed25519 => EncodingKey::from_ed_pem(ED25519.as_bytes()),
            Pair::Hmac => EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
        }
        .expect("test key");
        Self {
            alg,
            kid: kid.to_owned(),
            pair,
            encoding,
        }
    }

    /// The public half as a JWK (for HMAC: the secret as an `oct` key).
    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).expect("jwk");
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_value(jwk).expect("jwk json")
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).expect("sign")
    }

    /// Signs with a header of the caller's choosing (no `kid` unless set).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("sign")
    }
}

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims of a token valid for the next hour.
pub fn claims(iss: &str, aud: &str, sub: &str) -> Value {
    let now = now();
    json!({"iss": iss, "aud": aud, "sub": sub, "iat": now, "nbf": now - 1, "exp": now + 3600})
}

/// `claims` with `key` set to `value`.
pub fn with_claim(claims: &Value, key: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[key] = value;
    c
}

/// `claims` without `key`.
pub fn without_claim(claims: &Value, key: &str) -> Value {
    let mut c = claims.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove(key);
    }
    c
}

/// The algorithm-confusion attack: an HS256 token whose HMAC secret is the
/// RSA public key (PEM), naming the RSA key's `kid`.
pub fn hs256_with_rsa_public_key(claims: &Value, kid: &str) -> String {
    let header = Header {
        kid: Some(kid.to_owned()),
        ..Header::new(Algorithm::HS256)
    };
    let key = EncodingKey::from_secret(RSA1_PUBLIC.as_bytes()).expect("key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// `token` with its payload replaced by `claims` (signature kept).
pub fn with_forged_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let (head, _, sig) = (parts.next(), parts.next(), parts.next());
    format!(
        "{}.{}.{}",
        head.unwrap_or(""),
        base64_url(claims.to_string().as_bytes()),
        sig.unwrap_or("")
    )
}

/// `base64url(header).base64url(claims).` — an unsigned (`alg: none`) token.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(claims.to_string().as_bytes())
    )
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Jwks {
    keys: parking_lot::Mutex<Vec<Value>>,
    failing: AtomicBool,
    fetches: AtomicU64,
}

/// A JWKS endpoint (`GET /jwks.json`) on a free loopback port, served on
/// the caller's tokio runtime.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<Jwks>,
}

async fn serve_jwks(State(s): State<Arc<Jwks>>) -> Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let keys = s.keys.lock().clone();
    axum::Json(json!({ "keys": keys })).into_response()
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        let state = Arc::new(Jwks {
            keys: parking_lot::Mutex::new(keys),
            failing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(serve_jwks))
            .with_state(Arc::clone(&state));
        let addr = crate::serve_on_loopback(app).await;
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock() = keys;
    }

    /// Answer 503 to every fetch (or serve again).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Fetches served so far.
    pub fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }
}
