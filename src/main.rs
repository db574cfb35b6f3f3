//! `paygate`: the command line. Parsing only; the work is in `app` and the crates.

mod app;
mod demo;
mod reconcile;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc: measurably cheaper than glibc malloc for the proxy's many small,
// short-lived allocations (see the benchmark in README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "paygate", version, about = "Pay-per-call metered API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway, admin API and usage writer in one process.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Start a sample market-data upstream, seed the four plans and print keys.
        #[arg(long)]
        demo: bool,
    },
    /// Only the gateway (proxy and usage writer), for running several over a
    /// shared Redis. Its admin listener serves /healthz, /readyz and /metrics.
    Gateway {
        #[arg(long)]
        config: PathBuf,
    },
    /// Only the admin API (and /healthz, /readyz, /metrics), beside gateways
    /// that share its Redis and database.
    Admin {
        #[arg(long)]
        config: PathBuf,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print every problem with its key and exit 2.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Billing tasks.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
}

#[derive(Subcommand)]
enum BillingCommand {
    /// Consume the Redis usage stream into the ledger (Redis mode).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Overwrite every customer's quota and credit counters in the store with
    /// the values in the ledger (after Redis lost its data).
    RebuildCounters {
        #[arg(long)]
        config: PathBuf,
    },
    /// Compare the store's counters with the ledger for a period and print
    /// the drift per customer: exit 0 without drift, 1 with drift, 2 on error.
    Reconcile {
        #[arg(long)]
        config: PathBuf,
        /// Billing period, YYYY-MM.
        #[arg(long)]
        period: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::init_tracing();
    let result = match cli.command {
        Command::Serve { config, demo } => app::serve(config.as_deref(), demo),
        Command::Gateway { config } => app::serve_role(&config, app::Role::Gateway),
        Command::Admin { config } => app::serve_role(&config, app::Role::Admin),
        Command::Migrate { config } => app::migrate(&config),
        Command::CheckConfig { config } => return app::check_config(&config),
        Command::Billing {
            command: BillingCommand::RebuildCounters { config },
        } => app::rebuild_counters(&config),
        Command::Billing {
            command: BillingCommand::Run { config },
        } => app::billing_run(&config),
        Command::Billing {
            command: BillingCommand::Reconcile { config, period },
        } => return reconcile::run(&config, &period),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
