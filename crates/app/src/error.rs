//! Why paygate could not start or finish a command. Each variant names the
//! config key or the component at fault, so the message alone tells an
//! operator where to look.

use paygate_billing::DbError;
use paygate_config::ConfigError;
use paygate_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid configuration:\n  {}", join(.0))]
    Config(Vec<ConfigError>),
    /// A setting this command cannot work with.
    #[error("{key}: {message}")]
    Setting { key: &'static str, message: String },
    #[error("database.url: cannot open {url}: {source}")]
    Database { url: String, source: DbError },
    #[error("ledger: {0}")]
    Ledger(#[from] DbError),
    #[error("store.redis_url: {0}")]
    Store(#[from] StoreError),
    #[error("{key}: cannot bind {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the control runtime: {0}")]
    Runtime(std::io::Error),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Upstream(#[from] paygate_gateway::upstream::UpstreamError),
    #[error("reconcile: {0}")]
    Drift(#[from] crate::drift::DriftError),
    #[error("dead-letter replay: {0}")]
    Replay(#[from] paygate_usage::ReplayError),
    #[error("{0}")]
    Jwt(#[from] paygate_jwt::BuildError),
    #[error(transparent)]
    Tls(#[from] paygate_tls::TlsError),
    #[error("demo: {0}")]
    Demo(String),
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}
