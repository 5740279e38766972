//! The `unite-hub` command line: `serve` (default), `warm`, `check`, `seed`, `config`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI talks to its terminal

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use unite_hub::Config;
use unite_hub::config::LogFormat;

/// mimalloc rather than the system allocator: a request allocates and frees some thirty small
/// blocks across the middleware, and mimalloc's thread-local free lists do that in well under
/// half the instructions (docs/BENCHMARKS.md, "Fifth session of the day").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "unite-hub", version, about = "The Unite example service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate, then serve (the default).
    Serve,
    /// Warm the cache now, with a progress bar and a summary.
    Warm,
    /// Check connectivity to Redis and Postgres, one line per step with its timing.
    Check,
    /// Create demo users (password `demo-password`) and contacts; existing users are kept.
    Seed {
        /// How many users.
        #[arg(long, default_value_t = 100)]
        users: u32,
        /// How many contacts per user.
        #[arg(long, default_value_t = 50)]
        contacts: u32,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprint!("unite-hub: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unite-hub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("unite-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let serving = matches!(command, Command::Serve);
    let telemetry = unite_telemetry::init(
        unite_telemetry::TelemetryConfig::new("unite-hub")
            .format(match config.log_format {
                LogFormat::Json => unite_telemetry::LogFormat::Json,
                LogFormat::Pretty => unite_telemetry::LogFormat::Pretty,
            })
            // Only the server logs at the configured level; the CLI tools keep quiet.
            .filter(if serving {
                config.log_filter.clone()
            } else {
                "warn".into()
            })
            .prometheus(serving),
    )?;
    match command {
        Command::Config => {
            for line in config.redacted_lines() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let lines = unite_hub::tools::check(&config).await;
            let mut ok = true;
            for line in &lines {
                ok &= line.ok;
                println!("{line}");
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Seed { users, contacts } => {
            let state = unite_hub::serve::prepare(config, None).await?;
            let conn = state.pool.get().await?;
            let seeded = unite_hub::seed::seed(&*conn, users, contacts).await?;
            println!(
                "seeded {} users and {} contacts (password: {})",
                seeded.users,
                seeded.contacts,
                unite_hub::seed::DEMO_PASSWORD
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Warm => {
            let state = unite_hub::serve::prepare(config, None).await?;
            let summary = unite_hub::tools::warm_with_progress_bar(&state).await?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let metrics = telemetry.metrics().cloned();
            let state = unite_hub::serve::prepare(config, metrics).await?;
            unite_hub::serve::serve(state).await?;
            drop(telemetry); // flushes the log queue and the trace exporter
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
