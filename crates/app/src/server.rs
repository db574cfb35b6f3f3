//! The gateway's Pingora server: the proxy service on `gateway.listen` and
//! `gateway.tls.listen` (HTTPS), run on the calling thread until shutdown.
//! (Upstream health checks run on the control runtime: see `Live`.)

use std::sync::Arc;

use paygate_config::Config;
use paygate_gateway::auth::Provisioner;
use paygate_gateway::live::Reloadable;
use paygate_gateway::{Gateway, GatewayDeps};
use paygate_metrics::Metrics;
use paygate_store::{Catalog, Store};
use paygate_usage::UsageSink;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use crate::{AppError, Shutdown};

/// What the proxy shares with the control side.
pub struct Shared {
    pub catalog: Arc<Catalog>,
    pub store: Arc<dyn Store>,
    pub usage: UsageSink,
    pub metrics: Metrics,
    /// Routes, upstreams, x402 settings, JWT issuers: what SIGHUP reloads.
    pub reloadable: Reloadable,
    pub provisioner: Arc<dyn Provisioner>,
    /// Certificates of the HTTPS listener (`[gateway.tls]`).
    pub certs: Option<Arc<paygate_tls::CertStore>>,
}

/// Runs Pingora on this thread until `shutdown`; in-flight calls get
/// `gateway.shutdown_grace_seconds` to finish. Pingora must not be started
/// inside a tokio runtime: it builds its own.
pub fn run(
    config: &Config,
    shared: Shared,
    background: tokio::runtime::Handle,
    shutdown: Shutdown,
) -> Result<(), AppError> {
    let g = &config.gateway;
    let conf = ServerConf {
        threads: g.threads,
        grace_period_seconds: Some(g.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let shared_certs = shared.certs;
    let gateway = Gateway::new(GatewayDeps {
        reloadable: shared.reloadable,
        catalog: shared.catalog,
        provisioner: shared.provisioner,
        store: shared.store,
        on_unavailable: config.store.on_unavailable,
        usage: shared.usage,
        metrics: shared.metrics,
        trusted_proxies: g.trusted_proxies.clone(),
        max_body_bytes: g.max_body_bytes,
        max_uri_bytes: g.max_uri_bytes,
        max_header_bytes: g.max_header_bytes,
        background,
        // A few store round trips, however short the store's deadline.
        ws_wait: std::time::Duration::from_millis((config.store.timeout_ms * 4).max(100)),
        access_log: config.log.access,
        tracing: config.tracing.is_some(),
    });
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "paygate gateway",
    );
    if let Some(addr) = g.plain_listen() {
        proxy.add_tcp(&addr.to_string());
    }
    if let (Some(t), Some(certs)) = (&g.tls, shared_certs) {
        let settings = paygate_gateway::tls::listener_settings(
            certs,
            crate::tls::ssl_version(t.min_version),
            t.http2,
        )
        .map_err(|e| AppError::Setting {
            key: "gateway.tls",
            message: e.to_string(),
        })?;
        proxy.add_tls_with_settings(&t.listen.to_string(), None, settings);
    }
    server.add_service(proxy);
    server.run(shutdown.into_pingora());
    Ok(())
}
