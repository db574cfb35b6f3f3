//! Checking one token against its issuer: every check of a valid JWT, each
//! failure with its own [`JwtError`].

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use paygate_core::CustomerId;
use serde_json::{Map, Value};

use crate::error::JwtError;
use crate::issuer::Issuer;
use crate::keys::{family_name, KeySet, Lookup};

/// Larger tokens are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How long a call waits for the refetch of a key set when its token names
/// an unknown key.
pub const REFETCH_WAIT: Duration = Duration::from_secs(3);

/// The parts of a token read before its signature is checked: which issuer
/// and key to check it with.
pub struct Unverified<'a> {
    pub token: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

fn segment(s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed("a segment is not base64url"))
}

/// Splits and decodes header and claims; nothing here is trusted yet.
pub fn parse(token: &str) -> Result<Unverified<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge(MAX_TOKEN_BYTES));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three segments"));
    };
    let header: Map<String, Value> = serde_json::from_slice(&segment(h)?)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&segment(p)?)
        .map_err(|_| JwtError::Malformed("the payload is not a JSON object"))?;
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    // `none` and anything unknown: never taken from the token.
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| JwtError::AlgorithmNotAllowed(printable(alg_name)))?;
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok(Unverified {
        token,
        alg,
        kid,
        claims,
    })
}

/// A header value fit for a message: short, printable.
fn printable(s: &str) -> String {
    if s.is_empty() {
        return "(none given)".into();
    }
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(16)
        .collect()
}

pub fn issuer_of<'u>(u: &'u Unverified<'_>) -> Result<&'u str, JwtError> {
    match u.claims.get("iss") {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(JwtError::InvalidClaim("iss".into())),
        None => Err(JwtError::MissingClaim("iss".into())),
    }
}

fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Checks the token with `issuer`'s keys; on an unknown `kid`, refetches
/// them once (rate limited) and looks again. Returns the key set that
/// verified it.
pub async fn check(issuer: &Issuer, u: &Unverified<'_>) -> Result<Arc<KeySet>, JwtError> {
    if !issuer.algorithms.contains(&u.alg) {
        return Err(JwtError::AlgorithmNotAllowed(format!("{:?}", u.alg)));
    }
    let kid = u.kid.as_deref();
    // Never fetched: the refresher is retrying in the background.
    let mut keys = issuer.keys().ok_or(JwtError::IssuerUnavailable)?;
    // A rotation: the issuer may have published the key since. A fetch that
    // was already under way (a scheduled refresh) may predate the key, so a
    // second refetch is asked for; the 10 s gate refuses it when the first
    // was a refetch of its own.
    for _ in 0..2 {
        match keys.lookup(kid, u.alg) {
            Lookup::Found(_) => break,
            Lookup::Ambiguous => return Err(JwtError::AmbiguousKey),
            Lookup::UnknownKid => {
                if !issuer.refetch(REFETCH_WAIT).await {
                    return Err(unknown(kid));
                }
                keys = issuer.keys().ok_or(JwtError::IssuerUnavailable)?;
            }
        }
    }
    let key = match keys.lookup(kid, u.alg) {
        Lookup::Found(k) => k,
        Lookup::Ambiguous => return Err(JwtError::AmbiguousKey),
        Lookup::UnknownKid => return Err(unknown(kid)),
    };
    if !key.fits(u.alg) {
        return Err(JwtError::KeyTypeMismatch {
            alg: format!("{:?}", u.alg),
            key: family_name(key.family()),
        });
    }
    let mut v = Validation::new(u.alg);
    v.leeway = issuer.leeway_seconds;
    v.validate_nbf = true;
    v.set_issuer(&[issuer.issuer.as_str()]);
    if issuer.audience.is_empty() {
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp"]);
    } else {
        v.set_audience(&issuer.audience);
        v.set_required_spec_claims(&["exp", "aud"]);
    }
    jsonwebtoken::decode::<serde::de::IgnoredAny>(u.token, &key.decoding, &v)
        .map_err(|e| from_library(e.kind()))?;
    // The library leaves `iat` alone: a token from the future is refused too.
    match u.claims.get("iat") {
        None => {}
        Some(v) => match v.as_u64() {
            Some(iat) if iat > unix_now() + issuer.leeway_seconds => {
                return Err(JwtError::IssuedInFuture)
            }
            Some(_) => {}
            None => return Err(JwtError::InvalidClaim("iat".into())),
        },
    }
    Ok(keys)
}

fn unknown(kid: Option<&str>) -> JwtError {
    JwtError::UnknownKey(kid.map(printable).unwrap_or_else(|| "(none given)".into()))
}

fn from_library(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidIssuer => JwtError::UnknownIssuer,
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => JwtError::InvalidClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            JwtError::AlgorithmNotAllowed("for this key".into())
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => JwtError::Malformed("undecodable"),
        _ => JwtError::BadSignature,
    }
}

/// What a verified token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub customer_id: CustomerId,
    pub name: Option<String>,
    pub email: Option<String>,
    /// The value of the issuer's `plan_claim`, when it has one.
    pub plan: Option<String>,
}

pub fn claims(issuer: &Issuer, u: &Unverified<'_>) -> Result<Claims, JwtError> {
    let c = &issuer.customer_claim;
    let id = match u.claims.get(c) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(JwtError::InvalidClaim(c.clone())),
        None => return Err(JwtError::MissingClaim(c.clone())),
    };
    let customer_id = CustomerId::new(id).map_err(|_| JwtError::InvalidClaim(c.clone()))?;
    let text = |k: &str| u.claims.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Claims {
        customer_id,
        name: text("name"),
        email: text("email"),
        plan: issuer.plan_claim.as_deref().and_then(text),
    })
}
