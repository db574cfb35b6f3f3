//! The admin API (SPEC §5) on its own listener: plans, customers, keys,
//! credits and balances, usage reports, invoices and the audit log, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! Every change is written to the database first and then applied to the
//! gateway's catalog and store, so it is in force for the next call.

mod error;
mod extract;
mod handlers;
pub mod openapi;
mod views;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;
use paygate_billing::Database;
use paygate_metrics::Metrics;
use paygate_store::{Catalog, ChangeBus, Store};

pub use error::ApiError;

/// What the handlers share.
pub struct AdminState {
    pub db: Database,
    pub catalog: Arc<Catalog>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    /// Bearer token for `/admin/v1/*`.
    pub token: String,
    /// Tells the other gateways which record changed.
    pub changes: ChangeBus,
}

/// The whole admin API; tests call it without a socket.
pub fn router(state: Arc<AdminState>) -> Router {
    use handlers::{billing, credits, customers, keys, ops, plans};
    let api = Router::new()
        .route("/plans", get(plans::list).post(plans::create))
        .route(
            "/plans/{id}",
            get(plans::get).put(plans::replace).delete(plans::remove),
        )
        .route("/customers", get(customers::list).post(customers::create))
        .route(
            "/customers/{id}",
            get(customers::get).patch(customers::patch),
        )
        .route("/customers/{id}/keys", get(keys::list).post(keys::create))
        .route("/keys/{key_id}", delete(keys::revoke))
        .route("/customers/{id}/credits", post(credits::top_up))
        .route("/customers/{id}/balance", get(credits::balance))
        .route("/usage", get(billing::usage))
        .route("/invoices", get(billing::list_invoices))
        .route("/invoices/close", post(billing::close))
        .route("/invoices/{id}", get(billing::get_invoice))
        .route("/payments", get(billing::payments))
        .route("/audit", get(billing::audit))
        .route("/openapi.json", get(openapi::serve))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // Inside the token check: a request without the token stores nothing.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            handlers::idempotency::idempotent,
        ))
        // `layer`, not `route_layer`: without the token even unknown paths
        // answer 401, so the API does not reveal which routes exist.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            handlers::auth::require_token,
        ));
    operations().nest("/admin/v1", api).with_state(state)
}

/// Only `/healthz`, `/readyz` and `/metrics`: the admin listener of a
/// gateway-only process (`paygate gateway`), which has no admin API.
pub fn operations_router(state: Arc<AdminState>) -> Router {
    operations().with_state(state)
}

fn operations() -> Router<Arc<AdminState>> {
    use handlers::ops;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
}
