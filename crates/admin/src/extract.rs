//! Request extractors that fail with our error body instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::IntoParams;

use crate::ApiError;

/// A JSON body: malformed JSON → 400, well-formed but wrong shape → 422.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::BadRequest(format!("malformed JSON: {e}")),
    })
}

/// Query parameters: a malformed query string (a repeated or wrongly
/// typed parameter) → 400 with our error body.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Params(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// `?limit=` (1..=1000, default 100) and `?starting_after=<id>`.
pub struct Paging {
    pub limit: u32,
    pub starting_after: Option<String>,
}

/// The query of a list endpoint, as sent; [`Paging`] checks it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PagingQuery {
    /// Items per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// The id of the last item of the previous page: this page starts after it.
    starting_after: Option<String>,
}

/// Documents the query parameters `Paging` reads.
impl IntoParams for Paging {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        PagingQuery::into_params(parameter_in)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Params(raw) = Params::<PagingQuery>::from_request_parts(parts, state).await?;
        let limit = match raw.limit {
            None => 100,
            Some(s) => match s.parse::<u32>() {
                Ok(n @ 1..=1000) => n,
                _ => {
                    return Err(ApiError::BadRequest(
                        "limit must be an integer from 1 to 1000".into(),
                    ))
                }
            },
        };
        Ok(Self {
            limit,
            starting_after: raw.starting_after.filter(|s| !s.is_empty()),
        })
    }
}

/// Who makes a change, for the audit log: the `X-Paygate-Actor` header (a
/// name the caller gives itself, at most 100 printable characters) or
/// `admin`, and the peer address when the listener knows it.
pub struct Audited(pub paygate_billing::audit::Actor);

/// Documents the header `Audited` reads.
impl IntoParams for Audited {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![ParameterBuilder::new()
            .name("X-Paygate-Actor")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Who makes the change, for the audit log (default `admin`): 1 to 100 printable characters",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(100)),
            ))
            .build()]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let name = match parts.headers.get("x-paygate-actor") {
            None => "admin".to_owned(),
            Some(v) => {
                let s = v.to_str().unwrap_or("").trim();
                if s.is_empty() || s.len() > 100 || s.chars().any(char::is_control) {
                    return Err(ApiError::BadRequest(
                        "X-Paygate-Actor: must be 1 to 100 printable characters".into(),
                    ));
                }
                s.to_owned()
            }
        };
        let source = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Self(paygate_billing::audit::Actor { name, source }))
    }
}
