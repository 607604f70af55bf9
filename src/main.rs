//! The `walcast` command: configuration and tracing first, then one subcommand.
//!
//! Exit codes: 0 success; 1 a runtime failure or a `check` blocker; 2 bad configuration
//! (reported before anything connects).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use walcast::config::Config;

walcast::service_allocator!();

#[derive(Parser)]
#[command(
    name = "walcast",
    version,
    about = "Real-time Socket.IO events for Strapi v5 from Postgres's WAL"
)]
struct Cli {
    /// Configuration file (TOML); defaults and environment apply without one.
    #[arg(long, global = true, env = "WALCAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run,
    /// Create the publication and replication slot (idempotent); print what changed.
    Setup,
    /// Pre-flight checks; exit 1 on any blocker.
    Check,
    /// Remove what setup made: the slot, the publication, REPLICA IDENTITY FULL (idempotent;
    /// refused while a walcast consumes the slot).
    Teardown,
    /// Run the service and replay real Strapi editing sessions against its database.
    Demo {
        /// Folder with the Strapi 5.54 fixture replay files.
        #[arg(long, default_value = "fixtures/strapi-5.54/replay")]
        fixtures: PathBuf,
        /// Pause between replayed actions, in milliseconds.
        #[arg(long, default_value_t = 1500)]
        pace_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("walcast: configuration error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("walcast: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
        match cli.command {
            Command::Run => done(run(config).await),
            Command::Setup => done(setup(&config).await),
            Command::Teardown => done(teardown(&config).await),
            Command::Check => Ok(walcast::preflight::check(&config).await),
            Command::Demo { fixtures, pace_ms } => done(demo(config, fixtures, pace_ms).await),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            eprintln!("walcast: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
        t.cancel();
    });
    token
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr()).await?;
    let shutdown = shutdown_on_signals();
    walcast::run(config, listener, shutdown).await
}

async fn setup(config: &Config) -> anyhow::Result<()> {
    let client = walcast::service::connect_sql(config).await?;
    let changes = walcast::service::setup(config, &client).await?;
    if changes.is_empty() {
        println!("walcast setup: nothing to change");
    }
    for change in changes {
        println!("walcast setup: {change}");
    }
    Ok(())
}

async fn teardown(config: &Config) -> anyhow::Result<()> {
    let client = walcast::service::connect_sql(config).await?;
    let changes = walcast::service::teardown(config, &client).await?;
    if changes.is_empty() {
        println!("walcast teardown: nothing to remove");
    }
    for change in changes {
        println!("walcast teardown: {change}");
    }
    Ok(())
}

async fn demo(config: Config, fixtures: PathBuf, pace_ms: u64) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr()).await?;
    let shutdown = shutdown_on_signals();
    let writer = walcast::demo::DemoWriter::new(&config, fixtures, pace_ms).await?;
    let writer_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = writer.run(writer_shutdown).await {
            error!("demo writer stopped: {e:#}");
        }
    });
    walcast::run(config, listener, shutdown).await
}
