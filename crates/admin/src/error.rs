//! Admin errors map to 400/401/404/409/422 with the SPEC §3 error body; a
//! 500 only for faults of paygate itself, never for bad input.

use std::collections::BTreeMap;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use paygate_billing::DbError;
use paygate_core::{ErrorCode, ValidationError};
use utoipa::openapi::{self, ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

use crate::views::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The store (Redis) cannot be reached: try again.
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::StoreUnavailable(_) => ErrorCode::LimiterUnavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::NotFound(format!("no {what} with id {id}"))
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => Self::NotFound("not found".into()),
            DbError::Conflict(m) => Self::Conflict(m),
            DbError::Invalid(m) => Self::Invalid(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<paygate_store::StoreError> for ApiError {
    fn from(e: paygate_store::StoreError) -> Self {
        Self::StoreUnavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "admin request failed");
        }
        let code = self.code();
        let request_id = uuid::Uuid::now_v7().to_string();
        let body = ErrorBody::new(code, &self.to_string(), &request_id);
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(self, Self::StoreUnavailable(_)) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if let Ok(v) = header::HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        resp
    }
}

/// The error answers every admin operation documents, each with the error body.
impl IntoResponses for ApiError {
    fn responses() -> BTreeMap<String, RefOr<openapi::response::Response>> {
        [
            (
                ErrorCode::BadRequest,
                "Malformed request: JSON, query parameter, paging or header",
            ),
            (ErrorCode::Unauthorized, "No valid admin bearer token"),
            (ErrorCode::NotFound, "No such record (or endpoint)"),
            (
                ErrorCode::Conflict,
                "Conflicts with a stored record, or an `Idempotency-Key` reused for another request",
            ),
            (
                ErrorCode::InvalidRequest,
                "Well-formed, but a field is invalid (the message names it)",
            ),
        ]
        .into_iter()
        .map(|(code, description)| {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(openapi::Ref::from_schema_name(
                            ErrorBody::name(),
                        ))))
                        .build(),
                )
                .build();
            (code.status().to_string(), response.into())
        })
        .collect()
    }
}
