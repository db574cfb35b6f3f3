//! `App`: everything one paygate process runs, built from a config and a
//! [`Role`], then run until shutdown. `main.rs`, the demo and the tests all
//! start paygate through it.
//!
//! Two runtimes: Pingora owns its own threads for the gateway (it must not
//! be started inside tokio), and a small "control" runtime runs the admin
//! API, the usage writer, catalog sync, reseeding, the drift gauge and the
//! demo upstream. The two share `Arc`s: the catalog, the store and the usage
//! sink (a buffer under a short lock, runtime-agnostic).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate_admin::AdminState;
use paygate_billing::Database;
use paygate_config::{Config, StoreBackend};
use paygate_metrics::Metrics;
use paygate_store::{Catalog, Store};
use paygate_usage::UsageSink;

use crate::demo::DemoUpstream;
use crate::provision::JwtProvisioner;
use crate::reload::{JwtRefresh, Reloader};
use crate::{catalog_sync, drift, server, store, usage, AppError, Role, Shutdown};
use paygate_gateway::auth::Provisioner;
use paygate_gateway::live::{Live, Reloadable};
use paygate_jwt::Issuers;

/// How long a stopping gateway waits for its usage events to be written.
const USAGE_DRAIN: Duration = Duration::from_secs(10);

/// A built paygate process: control side started, gateway ready to run.
pub struct App {
    rt: tokio::runtime::Runtime,
    role: Role,
    config: Config,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    /// Present when this process proxies calls.
    sink: Option<UsageSink>,
    issuers: Arc<Issuers>,
    /// Their JWKS refresh tasks (a gateway's).
    jwt_refresh: Option<JwtRefresh>,
    provisioner: Arc<dyn Provisioner>,
    metrics: Metrics,
    admin_addr: SocketAddr,
    /// The file the config came from: a gateway reloads it on SIGHUP.
    config_path: Option<std::path::PathBuf>,
    /// The HTTPS listener's certificates, when `[gateway.tls]` is set.
    gateway_certs: Option<Arc<paygate_tls::CertStore>>,
    admin_token: String,
    /// The admin API's state, which the demo seeds through.
    admin: Arc<AdminState>,
    /// Kept alive while the app runs: the demo's upstream and its database.
    _demo: Option<DemoUpstream>,
}

/// Where the admin token comes from when the config names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingToken {
    /// A start-up error naming `admin.token_env`.
    Refuse,
    /// A random one (the demo prints it; the gateway role checks none).
    Generate,
}

/// The control runtime: admin API, usage writer, background tasks.
pub fn control_runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("paygate-control")
        .enable_all()
        .build()
        .map_err(AppError::Runtime)
}

impl App {
    /// Starts what `role` runs on the control side (database, catalog,
    /// store, usage pipeline, admin listener) and returns before the gateway
    /// listens: [`App::run`] does that.
    pub fn build(config: Config, role: Role) -> Result<Self, AppError> {
        Self::build_on(control_runtime()?, config, role, MissingToken::Refuse)
    }

    /// `paygate serve --demo`: a sample upstream, its own temporary
    /// database, the demo plans, customers and keys (printed); with `tls`,
    /// HTTPS too, with a self-signed certificate made at start.
    pub fn demo(tls: bool) -> Result<Self, AppError> {
        let rt = control_runtime()?;
        let demo = rt.block_on(DemoUpstream::start())?;
        let config = demo.config(tls)?;
        let app = Self::build_on(rt, config, Role::All, MissingToken::Generate)?;
        let api = paygate_admin::router(Arc::clone(&app.admin));
        app.rt
            .block_on(demo.seed(api, &app.admin_token, &app.config))?;
        Ok(Self {
            _demo: Some(demo),
            ..app
        })
    }

    fn build_on(
        rt: tokio::runtime::Runtime,
        config: Config,
        role: Role,
        missing_token: MissingToken,
    ) -> Result<Self, AppError> {
        let admin_token = match config.admin_token() {
            Some(t) => t,
            // Nothing checks it: the gateway role has no admin API.
            None if !role.serves_admin_api() || missing_token == MissingToken::Generate => {
                paygate_core::apikey::generate_server_secret()
            }
            None => {
                return Err(AppError::Setting {
                    key: "admin.token_env",
                    message: format!(
                        "environment variable {} is not set (or set admin.token)",
                        config.admin.token_env
                    ),
                })
            }
        };
        let started = rt.block_on(start(&config, role, admin_token.clone()))?;
        Ok(Self {
            rt,
            role,
            config,
            catalog: started.catalog,
            store: started.store,
            sink: started.sink,
            issuers: started.issuers,
            jwt_refresh: started.jwt_refresh,
            provisioner: started.provisioner,
            metrics: started.metrics,
            admin_addr: started.admin_addr,
            config_path: None,
            gateway_certs: started.gateway_certs,
            admin_token,
            admin: started.admin,
            _demo: None,
        })
    }

    /// Where the admin listener (or, for the gateway role, its health and
    /// metrics listener) is bound: `admin.listen` with port 0 resolved.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The file `config` was read from: on SIGHUP, a process that proxies
    /// re-reads it and applies its routes, upstreams, JWT issuers and x402
    /// settings.
    pub fn reload_from(self, path: &std::path::Path) -> Self {
        Self {
            config_path: Some(path.to_path_buf()),
            ..self
        }
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves until `shutdown`. A gateway then drains its calls and waits
    /// (at most 10 s) until their usage events are written.
    pub fn run(self, shutdown: Shutdown) -> Result<(), AppError> {
        let Self {
            rt,
            role,
            config,
            catalog,
            store,
            sink,
            issuers,
            jwt_refresh,
            provisioner,
            metrics,
            gateway_certs,
            config_path,
            ..
        } = self;
        tracing::info!(role = role.command(), admin = %config.admin.listen, gateway = ?config.gateway.plain_listen(), https = ?config.gateway.tls.as_ref().map(|t| t.listen), "paygate starting");
        let Some(sink) = sink.filter(|_| role.proxies()) else {
            rt.block_on(shutdown.wait());
            rt.shutdown_timeout(Duration::from_secs(1));
            return Ok(());
        };
        paygate_gateway::upstream::check_tls_targets(&config.upstreams)?;
        let live = Live::build(&config, 0, rt.handle())?;
        let reloadable = Reloadable::new(live, issuers);
        // The JWKS refresh tasks live as long as this run: in the reloader,
        // which replaces them, or here.
        let _jwt_refresh = match (config_path, jwt_refresh) {
            (Some(path), Some(refresh)) => {
                rt.spawn(
                    Reloader {
                        path,
                        reloadable: reloadable.clone(),
                        refresh,
                        metrics: metrics.clone(),
                        current: config.clone(),
                        generation: 0,
                    }
                    .watch(),
                );
                None
            }
            (_, refresh) => refresh,
        };
        let shared = server::Shared {
            catalog,
            store,
            usage: sink,
            metrics: metrics.clone(),
            reloadable,
            provisioner,
            certs: gateway_certs,
        };
        server::run(&config, shared, rt.handle().clone(), shutdown)?;

        // Pingora has drained in-flight calls (and dropped the sink, which
        // closes the pipeline); let the writer put their events where usage
        // is kept before the process ends.
        let deadline = Instant::now() + USAGE_DRAIN;
        while metrics.usage_backlog.get() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if metrics.usage_backlog.get() > 0 {
            tracing::error!(
                backlog = metrics.usage_backlog.get(),
                "usage events not written at exit"
            );
        }
        rt.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    }
}

/// What the control side produced.
struct Started {
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    sink: Option<UsageSink>,
    issuers: Arc<Issuers>,
    jwt_refresh: Option<JwtRefresh>,
    provisioner: Arc<dyn Provisioner>,
    metrics: Metrics,
    admin_addr: SocketAddr,
    admin: Arc<AdminState>,
    gateway_certs: Option<Arc<paygate_tls::CertStore>>,
}

/// Starts the control side of `role`, in dependency order: the database
/// (truth), the catalog loaded from it and kept in step, the store seeded
/// from the ledger, the usage pipeline, background checks, then the admin
/// listener last, so that `/readyz` answers only once the rest is up.
async fn start(config: &Config, role: Role, token: String) -> Result<Started, AppError> {
    // Certificates first: a bad file should stop the start before anything
    // else is touched.
    let certs = Arc::new(crate::tls::Certificates::load(config, role)?);
    let db = Database::connect(&config.database.url)
        .await
        .map_err(|source| AppError::Database {
            url: config.database.url.clone(),
            source,
        })?;
    let secret = db.key_secret(config.key_secret()).await?;
    let catalog = Arc::new(Catalog::new(secret.into_bytes()));
    let (store, reseeding) = store::build(config)?;
    let metrics = Metrics::new()?;
    Arc::clone(&certs).watch(metrics.clone());

    let changes = catalog_sync::load_and_follow(config, &db, &catalog).await?;
    catalog_sync::seed_counters(&db, &catalog, store.as_ref()).await?;
    if role.proxies() {
        store::seed_payment_claims(&db, store.as_ref()).await?;
    }
    if let Some(work) = reseeding {
        store::start_reseeding(&db, &catalog, &store, work, &metrics).await;
    }
    if role.consumes_usage_stream() && config.store.backend == StoreBackend::Redis {
        tokio::spawn(usage::consumer(config, db.clone(), metrics.clone())?.run());
    }
    let sink = if role.proxies() {
        Some(usage::start_writer(config, &db, &metrics)?)
    } else {
        None
    };
    let issuers = Arc::new(Issuers::from_config(&config.auth.jwt)?);
    let jwt_refresh = role
        .proxies()
        .then(|| JwtRefresh::start(&issuers, &metrics));
    let provisioner: Arc<dyn Provisioner> = Arc::new(JwtProvisioner {
        db: db.clone(),
        catalog: Arc::clone(&catalog),
        store: Arc::clone(&store),
        changes: changes.clone(),
        serial: tokio::sync::Mutex::new(()),
    });
    if role.serves_admin_api() {
        tokio::spawn(drift::watch(
            db.clone(),
            Arc::clone(&catalog),
            Arc::clone(&store),
            metrics.clone(),
            Duration::from_millis(config.usage.drift_interval_ms.max(100)),
        ));
    }

    let state = Arc::new(AdminState {
        db,
        catalog: Arc::clone(&catalog),
        store: Arc::clone(&store),
        metrics: metrics.clone(),
        token,
        changes,
    });
    let addr = config.admin.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            key: "admin.listen",
            addr,
            source,
        })?;
    let admin_addr = listener.local_addr().map_err(|source| AppError::Bind {
        key: "admin.listen",
        addr,
        source,
    })?;
    let router = if role.serves_admin_api() {
        paygate_admin::router(Arc::clone(&state))
    } else {
        paygate_admin::operations_router(Arc::clone(&state))
    };
    match certs.admin.as_ref().map(|a| a.server.clone()) {
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
        Some(tls) => {
            let listener = listener.into_std().map_err(|source| AppError::Bind {
                key: "admin.listen",
                addr,
                source,
            })?;
            let server = axum_server::from_tcp(listener)
                .map_err(|source| AppError::Bind {
                    key: "admin.listen",
                    addr,
                    source,
                })?
                .acceptor(axum_server::tls_openssl::OpenSSLAcceptor::new(tls));
            tokio::spawn(async move {
                if let Err(e) = server.serve(router.into_make_service()).await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
    }
    Ok(Started {
        catalog,
        store,
        sink,
        issuers,
        jwt_refresh,
        provisioner,
        metrics,
        admin_addr,
        admin: state,
        gateway_certs: certs.gateway.clone(),
    })
}
