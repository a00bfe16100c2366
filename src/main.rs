//! The `fluxbase` command line. Nothing else lives here: each command calls into the library.

use clap::{Parser, Subcommand};
use fluxbase::config::{self, CliOverrides, Config};
use fluxbase::server::{self, StartError};
use std::path::PathBuf;
use std::process::ExitCode;

/// With the `mimalloc` feature (a default), mimalloc instead of glibc's malloc: a REST request
/// allocates and frees a few hundred small blocks (a callgrind profile put malloc + free at a
/// quarter of its instructions), which mimalloc's thread-local free lists serve faster;
/// measured in docs/benchmarks.md, with its memory cost.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fluxbase",
    version,
    about = "One binary that turns PostgreSQL into a complete backend"
)]
struct Cli {
    /// Config file (default: ./fluxbase.yaml when present).
    #[arg(long, global = true, env = "FLUXBASE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (managed Postgres, local storage).
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// Use this Postgres instead of the managed one.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to bind (default 127.0.0.1).
        #[arg(long)]
        host: Option<String>,
        /// Port to bind (default 8080).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run job workers and the cron leader only (no HTTP server).
    Worker,
    /// Apply or inspect database migrations.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply pending migrations (the default).
    Up,
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration and list every problem (exit status 2 when invalid).
    Check,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Print the anon and service_role keys.
    Show,
}

fn main() -> ExitCode {
    // The password-hashing worker this binary starts for itself (src/auth/hasher.rs).
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(fluxbase::auth::hasher::WORKER_ARG))
    {
        return fluxbase::auth::hasher::worker_main();
    }
    if let Ok(exe) = std::env::current_exe() {
        fluxbase::auth::hasher::use_worker_program(exe);
    }
    let code = real_main();
    // Log lines are written by a background thread: let it finish before the process ends.
    fluxbase::telemetry::flush();
    code
}

fn real_main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = CliOverrides {
        host: match &cli.command {
            Command::Serve { host, .. } => host.clone(),
            _ => None,
        },
        port: match &cli.command {
            Command::Serve { port, .. } => *port,
            _ => None,
        },
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
    };
    let loaded = match config::load(cli.config.as_deref(), &overrides) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    fluxbase::telemetry::init(&loaded.config.log);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if let Command::Config {
        action: ConfigAction::Check,
    } = cli.command
    {
        match &loaded.file {
            Some(f) => println!("configuration OK ({})", f.display()),
            None => println!("configuration OK (defaults and environment; no config file)"),
        }
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli.command, loaded.config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", e.message);
            eprintln!("error: {}", e.message);
            ExitCode::from(e.exit_code.clamp(1, 255) as u8)
        }
    }
}

async fn run(command: Command, config: Config) -> Result<(), StartError> {
    match command {
        Command::Serve { .. } => server::serve(config).await,
        Command::Worker => server::worker(config).await,
        Command::Migrate { action } => match action.unwrap_or(MigrateAction::Up) {
            MigrateAction::Up => {
                server::with_client(&config, async |client| server::migrate_up(client).await).await
            }
            MigrateAction::Status => {
                server::with_client(&config, async |client| server::migrate_status(client).await)
                    .await
            }
        },
        Command::Keys {
            action: KeysAction::Show,
        } => {
            let (anon, service) = server::with_client(&config, async |client| {
                server::show_keys(&config, client).await
            })
            .await?;
            println!("anon:         {anon}\nservice_role: {service}");
            Ok(())
        }
        Command::Config { .. } => Ok(()),
    }
}
