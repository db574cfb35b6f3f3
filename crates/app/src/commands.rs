//! What each `paygate` subcommand does. The binary parses arguments and
//! calls one of these; each returns the process's exit status.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use paygate_billing::reconcile::{self, Drift};
use paygate_billing::Database;
use paygate_config::{Config, StoreBackend};
use paygate_core::period::PeriodName;
use paygate_metrics::Metrics;
use paygate_store::SeedMode;
use paygate_usage::DeadLetterFile;

use crate::{control_runtime, drift, shutdown, store, usage, App, AppError, Role, Shutdown};

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, AppError> {
    paygate_config::load(path).map_err(AppError::Config)
}

/// Reads a config file and starts logging as its `[log]` says: what every
/// command that runs with a config does first.
fn start(path: &Path) -> Result<Config, AppError> {
    let config = load(path);
    match &config {
        Ok(c) => crate::logging::init(&c.log, c.tracing.as_ref()),
        Err(_) => crate::logging::init(&paygate_config::LogConfig::default(), None),
    }
    config
}

/// Exit status 0, or 1 with the error on stderr.
fn exit(result: Result<(), AppError>) -> ExitCode {
    crate::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paygate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `paygate serve [--config FILE | --demo [--tls]]`: every role in one process.
pub fn serve(config: Option<&Path>, demo: bool, tls: bool) -> ExitCode {
    if tls && !demo {
        return exit(Err(AppError::Setting {
            key: "--tls",
            message: "--tls goes with --demo; with a config file, HTTPS is [gateway.tls]".into(),
        }));
    }
    exit(match (config, demo) {
        (Some(_), true) => Err(AppError::Setting {
            key: "--demo",
            message: "--demo brings its own configuration; leave out --config".into(),
        }),
        (Some(p), false) => start(p).and_then(|c| {
            App::build(c, Role::All)?
                .reload_from(p)
                .run(Shutdown::Signals)
        }),
        (None, true) => {
            crate::logging::init(&paygate_config::LogConfig::default(), None);
            App::demo(tls).and_then(|app| app.run(Shutdown::Signals))
        }
        (None, false) => Err(AppError::Setting {
            key: "--config",
            message: "--config FILE is required (or --demo)".into(),
        }),
    })
}

/// `paygate gateway` / `paygate admin`: one role of a scaled-out
/// deployment. Both need the shared Redis: a memory store would keep quota,
/// credits and record changes inside this one process.
pub fn serve_role(path: &Path, role: Role) -> ExitCode {
    exit(start(path).and_then(|config| {
        if config.store.backend != StoreBackend::Redis {
            return Err(AppError::Setting {
                key: "store.backend",
                message: format!(
                    "`paygate {}` runs beside other paygate processes that share the \
                     store; set backend = \"redis\" (for one node, use `paygate serve`)",
                    role.command()
                ),
            });
        }
        App::build(config, role)?
            .reload_from(path)
            .run(Shutdown::Signals)
    }))
}

/// `paygate check-config`: exit 0, or every problem with its key and exit 2.
pub fn check_config(path: &Path) -> ExitCode {
    match paygate_config::load(path) {
        // Keys that parse but cannot be used (a PEM that is no key, a
        // certificate file that is missing or expired) are problems of the
        // config too.
        Ok(config) => match usable(&config) {
            Ok(()) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{e}");
                ExitCode::from(2)
            }
        },
        Err(errs) => {
            for e in errs {
                println!("{e}");
            }
            ExitCode::from(2)
        }
    }
}

/// What `check-config` reads beyond the file: JWT keys, served
/// certificates, upstream CA files and client certificates.
fn usable(config: &Config) -> Result<(), AppError> {
    paygate_jwt::Issuers::from_config(&config.auth.jwt)?;
    crate::tls::Certificates::load(config, Role::All)?;
    paygate_gateway::upstream::check_tls_files(&config.upstreams)?;
    Ok(())
}

/// Opens the configured database (applying migrations).
async fn database(config: &Config) -> Result<Database, AppError> {
    Database::connect(&config.database.url)
        .await
        .map_err(|source| AppError::Database {
            url: config.database.url.clone(),
            source,
        })
}

/// `paygate migrate`: apply database migrations and exit.
pub fn migrate(path: &Path) -> ExitCode {
    exit(start(path).and_then(|config| {
        control_runtime()?.block_on(async {
            database(&config).await?;
            println!("migrations applied to {}", config.database.url);
            Ok(())
        })
    }))
}

/// `paygate billing rebuild-counters`: every customer's store counters
/// replaced by the ledger's values. Calls in flight while it runs may be
/// counted again by their own give-back or usage event, so run it when Redis
/// lost its data, not as routine.
pub fn rebuild_counters(path: &Path) -> ExitCode {
    exit(start(path).and_then(|config| {
        control_runtime()?.block_on(async {
            let db = database(&config).await?;
            let (store, _) = store::build(&config)?;
            store.ping().await?;
            let (_, customers) = db.load_plans_and_customers().await?;
            let customers: Vec<_> = customers.into_iter().map(Arc::new).collect();
            let counters = db.counters_of(&customers, Utc::now()).await?;
            let failed = store::seed_all(store.as_ref(), &counters, SeedMode::Overwrite).await;
            if let Some((_, e)) = failed.into_iter().next() {
                return Err(e.into());
            }
            let mut counters: Vec<_> = counters.into_iter().collect();
            counters.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, c) in &counters {
                println!(
                    "{id}: quota used {}, credits {} micros",
                    c.quota_used, c.credits_micros
                );
            }
            println!("rebuilt {} customer(s) from the ledger", counters.len());
            Ok(())
        })
    }))
}

/// `paygate billing run`: only the usage-stream consumer, for scaling
/// billing apart from the gateways.
pub fn billing_run(path: &Path) -> ExitCode {
    exit(start(path).and_then(|config| {
        if config.store.backend != StoreBackend::Redis {
            return Err(AppError::Setting {
                key: "store.backend",
                message:
                    "`paygate billing run` consumes the Redis usage stream; set backend = \"redis\""
                        .into(),
            });
        }
        control_runtime()?.block_on(async {
            let db = database(&config).await?;
            let consumer = usage::consumer(&config, db, Metrics::new()?)?;
            tracing::info!("billing consumer running");
            tokio::select! {
                () = consumer.run() => {}
                () = shutdown::signal() => {}
            }
            Ok(())
        })
    }))
}

/// `paygate billing reconcile --period YYYY-MM`: prints the drift per
/// customer, then the x402 payments whose settlement is unknown; exit 0
/// when there is neither, 1 when there is either, 2 when it cannot compare.
pub fn reconcile(path: &Path, period: &str) -> ExitCode {
    let period: PeriodName = match period.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("paygate: --period: {e}");
            return ExitCode::from(2);
        }
    };
    let result = start(path).and_then(|config| {
        if config.store.backend == StoreBackend::Memory {
            return Err(AppError::Setting {
                key: "store.backend",
                message: "\"memory\": the counters live inside the serving process; \
                          watch its paygate_usage_drift gauge instead"
                    .into(),
            });
        }
        control_runtime()?.block_on(async {
            let db = database(&config).await?;
            let (store, _) = store::build(&config)?;
            store.ping().await?;
            let (plans, customers) = db.load_plans_and_customers().await?;
            let customers: Vec<_> = customers.into_iter().map(Arc::new).collect();
            let plan_of = |id: &str| {
                plans
                    .iter()
                    .find(|p| p.id.as_str() == id)
                    .map(|p| Arc::new(p.clone()))
            };
            let rows = drift::drifts(&db, store.as_ref(), &customers, plan_of, |_| period).await?;
            print!("{}", reconcile::table(period, &rows));
            let unknown = db.unknown_payments().await?;
            print!("{}", reconcile::unknown_payments_table(&unknown));
            Ok(rows.iter().all(Drift::is_clean) && unknown.is_empty())
        })
    });
    crate::logging::flush();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("paygate: {e}");
            ExitCode::from(2)
        }
    }
}

/// `paygate billing replay-dead-letters`: sends the events of
/// `usage.dead_letter_path` (or `file`) to the ledger again, once the cause
/// that made it refuse them is fixed. What it still refuses stays in the
/// file; exit 0 when nothing is left, 1 otherwise.
pub fn replay_dead_letters(path: &Path, file: Option<&Path>) -> ExitCode {
    let result = start(path).and_then(|config| {
        let file = DeadLetterFile::new(file.unwrap_or(&config.usage.dead_letter_path));
        control_runtime()?.block_on(async {
            let db = database(&config).await?;
            let replayed = file.replay(&db, config.usage.batch_size).await?;
            println!(
                "{}: {} event(s) delivered to the ledger, {} line(s) kept",
                file.path().display(),
                replayed.delivered,
                replayed.kept
            );
            Ok(replayed.kept == 0)
        })
    });
    crate::logging::flush();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("paygate: {e}");
            ExitCode::FAILURE
        }
    }
}
