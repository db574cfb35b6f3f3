//! The process's served certificates: the gateway's HTTPS listener and the
//! admin listener's. Loaded at start (a missing file, a key that does not
//! match its certificate or an expired certificate is a start-up error
//! naming its key), re-read on SIGHUP without touching open connections,
//! and their expiry published as `paygate_tls_cert_expiry_seconds{name}`,
//! with a warning when one expires within 14 days.

use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_openssl::OpenSSLConfig;
use paygate_config::{Config, TlsVersion};
use paygate_metrics::Metrics;
use paygate_tls::{CertStore, PairSource, SslVersion, TlsError};

use crate::{AppError, Role};

/// A certificate closer than this to its end is warned about.
const WARN_WITHIN_SECONDS: i64 = 14 * 86_400;
/// How often the expiry gauge is brought up to date between reloads.
const EXPIRY_REFRESH: Duration = Duration::from_secs(60);

pub fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    }
}

/// The admin listener's certificate and the acceptor axum-server serves it with.
pub struct AdminCerts {
    store: CertStore,
    min_version: SslVersion,
    pub server: OpenSSLConfig,
}

fn admin_acceptor(
    store: &CertStore,
    min_version: SslVersion,
) -> Result<openssl::ssl::SslAcceptor, TlsError> {
    paygate_tls::server::acceptor(store.current().default_pair(), min_version)
}

/// Every certificate this process serves.
pub struct Certificates {
    pub gateway: Option<Arc<CertStore>>,
    pub admin: Option<AdminCerts>,
}

fn pair(label: &str, section: &str, cert_path: &str, key_path: &str) -> PairSource {
    PairSource {
        label: label.to_string(),
        cert_path: cert_path.into(),
        key_path: key_path.into(),
        cert_key: format!("{section}.cert_path"),
        key_key: format!("{section}.key_path"),
    }
}

impl Certificates {
    pub fn load(config: &Config, role: Role) -> Result<Self, AppError> {
        let gateway = match config.gateway.tls.as_ref().filter(|_| role.proxies()) {
            None => None,
            Some(t) => {
                let default = pair("gateway", "gateway.tls", &t.cert_path, &t.key_path);
                let named = t
                    .certs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let src = pair(
                            &c.server_name,
                            &format!("gateway.tls.certs[{i}]"),
                            &c.cert_path,
                            &c.key_path,
                        );
                        (c.server_name.clone(), src)
                    })
                    .collect();
                Some(Arc::new(CertStore::load(default, named)?))
            }
        };
        let admin = match &config.admin.tls {
            None => None,
            Some(t) => {
                let store = CertStore::load(
                    pair("admin", "admin.tls", &t.cert_path, &t.key_path),
                    Vec::new(),
                )?;
                let min_version = ssl_version(t.min_version);
                let acceptor = admin_acceptor(&store, min_version)?;
                Some(AdminCerts {
                    store,
                    min_version,
                    server: OpenSSLConfig::from_acceptor(Arc::new(acceptor)),
                })
            }
        };
        Ok(Self { gateway, admin })
    }

    pub fn is_empty(&self) -> bool {
        self.gateway.is_none() && self.admin.is_none()
    }

    /// Re-reads every file. A listener whose files fail keeps what it serves.
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut first_error = None;
        if let Some(g) = &self.gateway {
            if let Err(e) = g.reload() {
                first_error.get_or_insert(e);
            }
        }
        if let Some(a) = &self.admin {
            let swapped = a
                .store
                .reload()
                .and_then(|()| admin_acceptor(&a.store, a.min_version));
            match swapped {
                Ok(acceptor) => a.server.reload_from_acceptor(Arc::new(acceptor)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sets the expiry gauge; with `warn`, logs the certificates that end
    /// within 14 days.
    pub fn publish_expiry(&self, metrics: &Metrics, warn: bool) {
        let now = paygate_tls::now_unix();
        let stores = self
            .gateway
            .iter()
            .map(|g| g.current())
            .chain(self.admin.iter().map(|a| a.store.current()));
        for certs in stores {
            for pair in certs.pairs() {
                let left = pair.seconds_left(now);
                metrics
                    .tls_cert_expiry
                    .with_label_values(&[pair.label.as_str()])
                    .set(left);
                if warn && left < WARN_WITHIN_SECONDS {
                    tracing::warn!(
                        certificate = %pair.label,
                        days_left = left / 86_400,
                        "TLS certificate expires within 14 days"
                    );
                }
            }
        }
    }

    /// On SIGHUP, re-reads the certificates; keeps the expiry gauge current.
    /// SIGHUP is taken even without certificates: `systemctl reload` must
    /// not end the process (SIGHUP's default action).
    pub fn watch(self: Arc<Self>, metrics: Metrics) {
        if !self.is_empty() {
            self.publish_expiry(&metrics, true);
            let certs = Arc::clone(&self);
            let gauge = metrics.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(EXPIRY_REFRESH).await;
                    certs.publish_expiry(&gauge, false);
                }
            });
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP handler not installed: certificates are not re-read");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if self.is_empty() {
                    tracing::info!("SIGHUP: no TLS certificates to re-read");
                    continue;
                }
                match self.reload() {
                    Ok(()) => {
                        metrics.tls_reloads.with_label_values(&["ok"]).inc();
                        tracing::info!("TLS certificates re-read");
                        self.publish_expiry(&metrics, true);
                    }
                    Err(e) => {
                        metrics.tls_reloads.with_label_values(&["error"]).inc();
                        tracing::error!(error = %e, "TLS certificates not re-read; the previous ones stay in use");
                    }
                }
            }
        });
    }
}
