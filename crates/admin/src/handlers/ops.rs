//! Liveness, readiness, metrics and the JSON answers for unknown paths.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::{AdminState, ApiError};

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when both the store and the database answer.
pub async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let store = s.store.ping().await.map_err(|e| e.to_string());
    let db = s.db.ping().await.map_err(|e| e.to_string());
    let status = if store.is_ok() && db.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "store": show(store),
            "database": show(db),
        })),
    )
}

pub async fn metrics(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
