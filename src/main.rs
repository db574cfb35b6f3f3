//! `paygate`: the command line. Argument parsing only; every command is a
//! call into `paygate_app::commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paygate_app::{commands, Role};

// mimalloc: measurably cheaper than glibc malloc for the proxy's many small,
// short-lived allocations (see bench/README.md).
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
        /// With --demo: HTTPS on 127.0.0.1:8443 too, with a self-signed
        /// certificate generated at start (its path is printed).
        #[arg(long)]
        tls: bool,
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
    /// Send the usage events kept in the dead-letter file to the ledger
    /// again, once the cause that made it refuse them is fixed: exit 0 when
    /// none is left, 1 when some are still refused.
    ReplayDeadLetters {
        #[arg(long)]
        config: PathBuf,
        /// The file to replay (default: usage.dead_letter_path).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, demo, tls } => commands::serve(config.as_deref(), demo, tls),
        Command::Gateway { config } => commands::serve_role(&config, Role::Gateway),
        Command::Admin { config } => commands::serve_role(&config, Role::Admin),
        Command::Migrate { config } => commands::migrate(&config),
        Command::CheckConfig { config } => commands::check_config(&config),
        Command::Billing { command } => match command {
            BillingCommand::Run { config } => commands::billing_run(&config),
            BillingCommand::RebuildCounters { config } => commands::rebuild_counters(&config),
            BillingCommand::Reconcile { config, period } => commands::reconcile(&config, &period),
            BillingCommand::ReplayDeadLetters { config, file } => {
                commands::replay_dead_letters(&config, file.as_deref())
            }
        },
    }
}
