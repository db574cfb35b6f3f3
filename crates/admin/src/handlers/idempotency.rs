//! `Idempotency-Key` on admin POSTs, as Stripe does it: the first response to
//! a key is stored and replayed for a retry of the same request; the same key
//! with a different request is refused.

use std::fmt::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use paygate_billing::idempotency::Claim;
use sha2::{Digest, Sha256};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::IntoParams;

use crate::{AdminState, ApiError};

const MAX_BODY: usize = 1 << 20;

/// The `Idempotency-Key` header of a POST.
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    const HEADER: &'static str = "Idempotency-Key";
    const MAX_LEN: usize = 255;

    /// The request's key, if it sent one.
    fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(key) = headers.get(Self::HEADER) else {
            return Ok(None);
        };
        match key.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= Self::MAX_LEN => Ok(Some(Self(k.to_owned()))),
            _ => Err(ApiError::BadRequest(format!(
                "{} must be 1 to {} visible ASCII characters",
                Self::HEADER,
                Self::MAX_LEN
            ))),
        }
    }
}

/// Documents the header on every POST.
impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![ParameterBuilder::new()
            .name(Self::HEADER)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "A retry with the same key and request gets the first response again; \
                 the same key with another request is refused (409)",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(Self::MAX_LEN)),
            ))
            .build()]
    }
}

/// Marks a response whose JSON field of this name is a secret shown once
/// (a new API key): the response kept for replays has it as `null`, so the
/// secret is never stored in clear (SPEC §3: keys are kept only as a hash).
#[derive(Clone, Copy)]
pub struct ShownOnce(pub &'static str);

/// The body to keep for replays: `body` without the secret `field`.
fn without_secret(body: &[u8], field: &str) -> Result<Vec<u8>, ApiError> {
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::Internal(format!("response to keep is not JSON: {e}")))?;
    if let Some(secret) = v.get_mut(field) {
        *secret = serde_json::Value::Null;
    }
    serde_json::to_vec(&v).map_err(|e| ApiError::Internal(format!("response to keep: {e}")))
}

fn request_hash(method: &Method, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str());
    h.update(b" ");
    h.update(path);
    h.update(b"\n");
    h.update(body);
    h.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub async fn idempotent(
    State(s): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(IdempotencyKey(key)) = IdempotencyKey::from_headers(req.headers())? else {
        return Ok(next.run(req).await);
    };
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::BadRequest("the body is too large".into()))?;
    let hash = request_hash(&parts.method, parts.uri.path(), &bytes);
    match s.db.claim_idempotency_key(&key, &hash).await? {
        Claim::Fresh => {}
        Claim::Done { status, body } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() =
                axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(resp);
        }
        Claim::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress".into(),
            ))
        }
        Claim::Mismatch => {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was used for a different request".into(),
            ))
        }
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (rparts, rbody) = resp.into_parts();
    let body = axum::body::to_bytes(rbody, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("response body: {e}")))?;
    // Our own failures may be retried with the same key; everything else,
    // errors about the request included, is the answer for good.
    if rparts.status.is_server_error() {
        s.db.release_idempotency_key(&key).await?;
    } else {
        let kept = match rparts.extensions.get::<ShownOnce>() {
            Some(ShownOnce(field)) => without_secret(&body, field)?,
            None => body.to_vec(),
        };
        s.db.complete_idempotency_key(&key, rparts.status.as_u16(), &kept)
            .await?;
    }
    Ok(Response::from_parts(rparts, Body::from(body)))
}
