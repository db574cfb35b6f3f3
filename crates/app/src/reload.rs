//! SIGHUP: the gateway re-reads its config file and puts the new
//! `[[upstreams]]`, `[[routes]]`, `[[auth.jwt]]` and `[x402]` in place
//! without a restart. Calls under way finish with the configuration they
//! started with; connections stay open; usage is untouched (the pipeline is
//! not part of what reloads). A file that fails validation, or whose
//! certificates or JWT keys cannot be read, is refused and the running
//! configuration stays. Other sections need a restart; a change there is
//! logged, not applied.

use std::path::PathBuf;
use std::sync::Arc;

use paygate_config::Config;
use paygate_gateway::live::{Live, Reloadable};
use paygate_jwt::Issuers;
use paygate_metrics::Metrics;
use tokio::task::AbortHandle;

use crate::AppError;

/// The JWKS refresh tasks of the issuers in use, stopped when replaced.
pub struct JwtRefresh {
    tasks: Vec<AbortHandle>,
}

impl JwtRefresh {
    /// Starts one refresh task per issuer on the current runtime.
    pub fn start(issuers: &Issuers, metrics: &Metrics) -> Self {
        let client = paygate_jwt::refresh::client();
        let tasks = issuers
            .iter()
            .map(|issuer| {
                tokio::spawn(paygate_jwt::refresh::run(
                    Arc::clone(issuer),
                    client.clone(),
                    metrics.jwks_refresh.clone(),
                ))
                .abort_handle()
            })
            .collect();
        Self { tasks }
    }
}

impl Drop for JwtRefresh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Everything a reload needs, owned by the SIGHUP task.
pub struct Reloader {
    pub path: PathBuf,
    pub reloadable: Reloadable,
    pub refresh: JwtRefresh,
    pub metrics: Metrics,
    /// The running configuration, to tell what a new file changes.
    pub current: Config,
    pub generation: u64,
}

impl Reloader {
    /// Waits for SIGHUP and reloads, until the runtime stops.
    pub async fn watch(mut self) {
        use tokio::signal::unix::{signal, SignalKind};
        for outcome in ["ok", "error"] {
            self.metrics.config_reloads.with_label_values(&[outcome]);
        }
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP handler not installed: the config is not reloaded");
                return;
            }
        };
        while hup.recv().await.is_some() {
            let outcome = match self.reload().await {
                Ok(()) => {
                    tracing::info!(config = %self.path.display(), generation = self.generation, "configuration reloaded: routes, upstreams, JWT issuers, x402");
                    "ok"
                }
                Err(e) => {
                    tracing::error!(config = %self.path.display(), error = %e, "configuration not reloaded; the previous one stays in use");
                    "error"
                }
            };
            self.metrics
                .config_reloads
                .with_label_values(&[outcome])
                .inc();
        }
    }

    async fn reload(&mut self) -> Result<(), AppError> {
        let config = paygate_config::load(&self.path).map_err(AppError::Config)?;
        let upstreams = config.upstreams.clone();
        tokio::task::spawn_blocking(move || {
            paygate_gateway::upstream::check_tls_targets(&upstreams)
        })
        .await
        .map_err(|e| AppError::Setting {
            key: "upstreams",
            message: e.to_string(),
        })??;
        let issuers = Arc::new(Issuers::reloaded(
            &config.auth.jwt,
            &self.reloadable.issuers(),
        )?);
        let live = Live::build(
            &config,
            self.generation + 1,
            &tokio::runtime::Handle::current(),
        )?;
        live.check_health_now().await;
        warn_about_restart_only_changes(&self.current, &config);
        // New issuers fetch their keys from now on; the old tasks stop.
        self.refresh = JwtRefresh::start(&issuers, &self.metrics);
        self.reloadable.swap(live, issuers);
        self.generation += 1;
        self.current = config;
        Ok(())
    }
}

/// Sections a reload does not apply, named when a new file changes them.
fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let sections: [(&str, bool); 7] = [
        ("gateway", differs(&old.gateway, &new.gateway)),
        ("admin", differs(&old.admin, &new.admin)),
        ("store", differs(&old.store, &new.store)),
        ("database", differs(&old.database, &new.database)),
        ("usage", differs(&old.usage, &new.usage)),
        ("log", differs(&old.log, &new.log)),
        ("tracing", differs(&old.tracing, &new.tracing)),
    ];
    for (section, changed) in sections {
        if changed {
            tracing::warn!(
                section,
                "[{section}] changed in the config file; it applies at the next restart"
            );
        }
    }
}
