//! Wiring: builds the database, catalog, store, usage pipeline, admin API and
//! Pingora gateway from a config, and runs them until SIGTERM/SIGINT.
//!
//! Two runtimes: Pingora owns its own threads for the gateway (it must not be
//! started inside tokio), and a small "control" runtime runs the admin API,
//! the usage writer and the demo upstream.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use paygate_admin::AdminState;
use paygate_billing::stream::{StreamConsumer, UsageStream};
use paygate_billing::DbError;
use paygate_billing::{ledger, BatchTarget, Database};
use paygate_config::{Config, StoreBackend};
use paygate_gateway::routing::RouteTable;
use paygate_gateway::upstream::Upstreams;
use paygate_gateway::{Gateway, GatewayDeps};
use paygate_metrics::Metrics;
use paygate_store::changes;
use paygate_store::{
    Catalog, ChangeBus, MemoryStore, RecordChange, RedisConn, RedisStore, ReseedOnMiss, SeedMode,
    Store,
};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAYGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    paygate_config::load(path).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", lines.join("\n  "))
    })
}

pub fn check_config(path: &Path) -> ExitCode {
    match paygate_config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in errs {
                println!("{e}");
            }
            ExitCode::from(2)
        }
    }
}

pub(crate) fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("paygate-control")
        .enable_all()
        .build()
        .context("starting the control runtime")
}

pub fn migrate(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    control_runtime()?.block_on(async {
        Database::connect(&config.database.url).await?;
        println!("migrations applied to {}", config.database.url);
        Ok(())
    })
}

/// Rebuilds every customer's store counters from the ledger, replacing what
/// the store holds. Calls in flight while it runs may be counted again by
/// their own give-back or usage event, so run it when Redis lost its data,
/// not as routine.
pub fn rebuild_counters(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    control_runtime()?.block_on(async {
        let db = Database::connect(&config.database.url).await?;
        let (store, _) = build_store(&config)?;
        store.ping().await.context("store unreachable")?;
        let (_, customers, _) = db.load_catalog().await?;
        let now = chrono::Utc::now();
        for c in &customers {
            let counters = db.counters(c, now).await?;
            store
                .seed(c.id.as_str(), counters, SeedMode::Overwrite)
                .await?;
            println!(
                "{}: quota used {}, credits {} micros",
                c.id, counters.quota_used, counters.credits_micros
            );
        }
        println!("rebuilt {} customer(s) from the ledger", customers.len());
        Ok(())
    })
}

/// The usage-stream consumer that fills the ledger in Redis mode.
fn consumer(config: &Config, db: Database, metrics: Metrics) -> anyhow::Result<StreamConsumer> {
    let conn = RedisConn::connect(&config.store.redis_url).context("store.redis_url")?;
    Ok(StreamConsumer::new(
        conn,
        &config.store.key_prefix,
        db,
        metrics,
        Duration::from_millis(config.usage.claim_idle_ms),
    ))
}

/// `paygate billing run`: only the usage-stream consumer, for scaling billing
/// apart from the gateways.
pub fn billing_run(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    if config.store.backend != StoreBackend::Redis {
        bail!("store.backend: `paygate billing run` consumes the Redis usage stream; set backend = \"redis\"");
    }
    control_runtime()?.block_on(async {
        let db = Database::connect(&config.database.url).await?;
        let metrics = Metrics::new().context("registering metrics")?;
        let consumer = consumer(&config, db, metrics)?;
        tracing::info!("billing consumer running");
        tokio::select! {
            () = consumer.run() => {}
            () = shutdown_signal() => {}
        }
        Ok(())
    })
}

/// What one process runs (SPEC §1): every role, or one of them when
/// gateways, admin API and billing are scaled apart over a shared Redis and
/// database (`paygate billing run` is the billing role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `paygate serve`: gateway, admin API, usage writer and, on Redis, the
    /// usage-stream consumer.
    All,
    /// `paygate gateway`: the proxy and its usage writer. Its admin listener
    /// serves only `/healthz`, `/readyz` and `/metrics`.
    Gateway,
    /// `paygate admin`: the admin API and the drift gauge; no proxy.
    Admin,
}

impl Role {
    fn command(self) -> &'static str {
        match self {
            Role::All => "serve",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
        }
    }

    fn proxies(self) -> bool {
        matches!(self, Role::All | Role::Gateway)
    }

    fn serves_admin_api(self) -> bool {
        matches!(self, Role::All | Role::Admin)
    }
}

/// What start-up produced that the gateway and shutdown need.
struct Control {
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    /// Present when this process proxies calls.
    sink: Option<paygate_billing::UsageSink>,
    metrics: Metrics,
    config: Config,
}

/// `paygate gateway` / `paygate admin`: one role of a scaled-out
/// deployment. Both need the shared Redis: a memory store would keep quota,
/// credits and record changes inside this one process.
pub fn serve_role(path: &Path, role: Role) -> anyhow::Result<()> {
    let config = load(path)?;
    if config.store.backend != StoreBackend::Redis {
        bail!(
            "store.backend: `paygate {}` runs beside other paygate processes that share the \
             store; set backend = \"redis\" (for one node, use `paygate serve`)",
            role.command()
        );
    }
    run(control_runtime()?, config, None, role)
}

pub fn serve(path: Option<&Path>, demo: bool) -> anyhow::Result<()> {
    let rt = control_runtime()?;
    let mut demo_setup = None;
    let config = match (path, demo) {
        (Some(_), true) => bail!("--demo brings its own configuration; leave out --config"),
        (Some(p), false) => load(p)?,
        (None, true) => {
            let setup = rt.block_on(crate::demo::start_upstream())?;
            let config = setup.config()?;
            demo_setup = Some(setup);
            config
        }
        (None, false) => bail!("--config FILE is required (or --demo)"),
    };
    run(rt, config, demo_setup, Role::All)
}

/// Starts what `role` runs on the control runtime `rt` (which already runs
/// the demo upstream, if any) and serves until SIGTERM/SIGINT.
fn run(
    rt: tokio::runtime::Runtime,
    config: Config,
    demo: Option<crate::demo::DemoUpstream>,
    role: Role,
) -> anyhow::Result<()> {
    let token = match (config.admin_token(), demo.is_some()) {
        (Some(t), _) => t,
        // Nothing checks it: the gateway role has no admin API.
        _ if !role.serves_admin_api() => paygate_core::apikey::generate_server_secret(),
        (None, true) => paygate_core::apikey::generate_server_secret(),
        (None, false) => bail!(
            "admin.token_env: environment variable {} is not set (or set admin.token)",
            config.admin.token_env
        ),
    };

    let control = rt.block_on(start_control(config, token, demo.as_ref(), role))?;
    let metrics = control.metrics.clone();
    if !role.proxies() {
        rt.block_on(shutdown_signal());
        rt.shutdown_timeout(Duration::from_secs(1));
        return Ok(());
    }
    run_gateway(control)?;

    // Pingora has drained in-flight calls; let the writer put their events in
    // the ledger before the process ends.
    let deadline = Instant::now() + Duration::from_secs(10);
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

async fn start_control(
    config: Config,
    token: String,
    demo: Option<&crate::demo::DemoUpstream>,
    role: Role,
) -> anyhow::Result<Control> {
    let db = Database::connect(&config.database.url)
        .await
        .with_context(|| format!("database.url: cannot open {}", config.database.url))?;
    let secret = db.key_secret(config.key_secret()).await?;
    let catalog = Arc::new(Catalog::new(secret.into_bytes()));
    let (store, reseed_requests) = build_store(&config)?;
    let metrics = Metrics::new().context("registering metrics")?;

    let (plans, customers, keys) = db.load_catalog().await?;
    catalog.replace_all(plans, customers, keys);
    let changes = match config.store.backend {
        StoreBackend::Memory => ChangeBus::Local,
        StoreBackend::Redis => {
            let (url, prefix) = (
                config.store.redis_url.clone(),
                config.store.key_prefix.clone(),
            );
            let (db, catalog) = (db.clone(), Arc::clone(&catalog));
            tokio::spawn(async move {
                let apply = |change| apply_change(&db, &catalog, change);
                let resync = || resync_catalog(&db, &catalog);
                changes::follow(url, prefix, apply, resync).await;
            });
            ChangeBus::redis(&config.store.redis_url, &config.store.key_prefix)
                .context("store.redis_url")?
        }
    };
    // The store is a cache of the ledger: load quota used and credits so a
    // restart gives nobody a fresh quota. `IfAbsent`: with a shared store the
    // live counters of the other gateways are ahead of the ledger.
    let now = chrono::Utc::now();
    for c in catalog.customers() {
        let counters = db.counters(&c, now).await?;
        if let Err(e) = store
            .seed(c.id.as_str(), counters, SeedMode::IfAbsent)
            .await
        {
            tracing::warn!(customer = %c.id, error = %e, "counters not loaded into the store yet");
        }
    }
    if let Some(requests) = reseed_requests {
        tokio::spawn(reseed(
            db.clone(),
            Arc::clone(&catalog),
            Arc::clone(&store),
            requests,
        ));
    }

    if role == Role::All && config.store.backend == StoreBackend::Redis {
        // One node does it all: it also consumes the usage stream into the
        // ledger (scaled out, `paygate billing run` does).
        tokio::spawn(consumer(&config, db.clone(), metrics.clone())?.run());
    }
    let sink = if role.proxies() {
        Some(usage_pipeline(&config, &db, &metrics)?)
    } else {
        None
    };
    if role.serves_admin_api() {
        tokio::spawn(crate::reconcile::watch(
            db.clone(),
            Arc::clone(&catalog),
            Arc::clone(&store),
            metrics.clone(),
            Duration::from_millis(config.usage.drift_interval_ms.max(100)),
        ));
    }

    let state = Arc::new(AdminState {
        db: db.clone(),
        catalog: Arc::clone(&catalog),
        store: Arc::clone(&store),
        metrics: metrics.clone(),
        token: token.clone(),
        changes,
    });
    if let Some(d) = demo {
        d.seed(&state, &config).await?;
    }
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot bind {}", config.admin.listen))?;
    let router = if role.serves_admin_api() {
        paygate_admin::router(state)
    } else {
        paygate_admin::operations_router(state)
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    tracing::info!(role = role.command(), admin = %config.admin.listen, gateway = %config.gateway.listen, "paygate starting");
    Ok(Control {
        catalog,
        store,
        sink,
        metrics,
        config,
    })
}

/// The usage writer of a proxying process; returns the sink calls emit into.
/// Embedded: events go straight into the ledger. Redis: into the usage
/// stream, which the billing consumer moves into the ledger.
fn usage_pipeline(
    config: &Config,
    db: &Database,
    metrics: &Metrics,
) -> anyhow::Result<paygate_billing::UsageSink> {
    let target: Arc<dyn BatchTarget> = match config.store.backend {
        StoreBackend::Memory => Arc::new(db.clone()),
        StoreBackend::Redis => {
            let conn = RedisConn::connect(&config.store.redis_url).context("store.redis_url")?;
            Arc::new(UsageStream::new(conn, &config.store.key_prefix))
        }
    };
    let (sink, writer) = ledger::pipeline(
        target,
        metrics.clone(),
        config.usage.buffer,
        config.usage.batch_size,
        Duration::from_millis(config.usage.flush_interval_ms),
    );
    let writer = match &config.usage.spill_path {
        Some(path) => writer.with_spill(paygate_billing::spill::SpillFile::new(path)),
        None => writer,
    };
    tokio::spawn(writer.run());
    Ok(sink)
}

/// SIGTERM or SIGINT, for the processes Pingora does not run.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "SIGTERM handler not installed; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads one changed record from the database into the catalog.
async fn apply_change(db: &Database, catalog: &Catalog, change: RecordChange) {
    if let Err(e) = reload(db, catalog, &change).await {
        tracing::warn!(?change, error = %e, "record change not applied");
    }
}

async fn reload(db: &Database, catalog: &Catalog, change: &RecordChange) -> Result<(), DbError> {
    match change {
        RecordChange::Plan(id) => match db.get_plan(id).await {
            Ok(p) => catalog.put_plan(p),
            Err(DbError::NotFound) => catalog.remove_plan(id),
            Err(e) => return Err(e),
        },
        RecordChange::Customer(id) => catalog.put_customer(db.get_customer(id).await?),
        RecordChange::Key(id) => match db.get_key(id).await {
            Ok((k, false)) => catalog.put_key(k),
            Ok((_, true)) | Err(DbError::NotFound) => catalog.revoke_key(id),
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

/// Loads the whole catalog again (after a missed change).
async fn resync_catalog(db: &Database, catalog: &Catalog) {
    // An admin change applied while the records were being read would be
    // undone by them: read again until no change slipped in between.
    for _ in 0..10 {
        let edits = catalog.edits();
        match db.load_catalog().await {
            Ok((plans, customers, keys)) => {
                if catalog.replace_all_unless_edited(edits, plans, customers, keys) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "catalog not reloaded");
                return;
            }
        }
    }
    tracing::warn!("catalog not reloaded: records kept changing while it was read");
}

type ReseedRequests = tokio::sync::mpsc::Receiver<String>;

/// The configured store; for Redis also the channel on which it asks for
/// customers' counters to be rebuilt from the ledger.
pub(crate) fn build_store(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Store>, Option<ReseedRequests>)> {
    match config.store.backend {
        StoreBackend::Memory => Ok((Arc::new(MemoryStore::new()), None)),
        StoreBackend::Redis => {
            let redis = RedisStore::connect(
                &config.store.redis_url,
                &config.store.key_prefix,
                Duration::from_millis(config.store.timeout_ms),
            )
            .context("store.redis_url")?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            Ok((Arc::new(ReseedOnMiss::new(redis, tx)), Some(rx)))
        }
    }
}

/// Rebuilds, from the ledger, the counters of customers the store has lost
/// (a Redis restarted without persistence) or never had.
async fn reseed(
    db: Database,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    mut requests: ReseedRequests,
) {
    let mut pending = std::collections::BTreeSet::new();
    while let Some(first) = requests.recv().await {
        pending.insert(first);
        while let Ok(more) = requests.try_recv() {
            pending.insert(more);
        }
        for id in std::mem::take(&mut pending) {
            let Some(customer) = catalog.customer(&id) else {
                continue;
            };
            let seeded = match db.counters(&customer, chrono::Utc::now()).await {
                Ok(c) => store
                    .seed(&id, c, SeedMode::IfAbsent)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match seeded {
                Ok(true) => tracing::info!(customer = %id, "counters rebuilt from the ledger"),
                Ok(false) => {}
                Err(e) => tracing::warn!(customer = %id, error = %e, "counters not rebuilt"),
            }
        }
    }
}

/// Runs Pingora on this thread until a shutdown signal.
fn run_gateway(c: Control) -> anyhow::Result<()> {
    let g = &c.config.gateway;
    let conf = ServerConf {
        threads: g.threads,
        grace_period_seconds: Some(g.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let (upstreams, health) = Upstreams::new(&c.config.upstreams)?;
    let routes = RouteTable::new(&c.config.routes, |name| upstreams.index_of(name));
    let gateway = Gateway::new(GatewayDeps {
        routes,
        upstreams,
        catalog: c.catalog,
        store: c.store,
        on_unavailable: c.config.store.on_unavailable,
        usage: c.sink.context("a proxying process starts a usage writer")?,
        metrics: c.metrics,
        trusted_proxies: g.trusted_proxies.clone(),
        max_body_bytes: g.max_body_bytes,
        max_uri_bytes: g.max_uri_bytes,
        max_header_bytes: g.max_header_bytes,
    });
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "paygate gateway",
    );
    proxy.add_tcp(&g.listen.to_string());
    server.add_service(proxy);
    for h in health {
        server.add_service(h);
    }
    server.run(RunArgs::default());
    Ok(())
}
