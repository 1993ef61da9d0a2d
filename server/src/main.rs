//! The `wsedge` binary: reads the config, starts the shards, waits for SIGTERM/SIGINT.
//!
//! A start that fails (a bad config, `WSEDGE_LOG`, a port in use) prints one line to stderr,
//! `wsedge: <why>`, and exits with 1, whatever `RUST_BACKTRACE` says.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsedge::config::LogFormat;
use wsedge::{FileConfig, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The log filter when `WSEDGE_LOG` is not set.
const DEFAULT_LOG: &str = "info,fjall=warn,lsm_tree=warn";

/// Sharded-per-core WebSocket edge server.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Config file [default: config/wsedge.toml if present, else the embedded default].
    #[arg(long, env = "WSEDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen (e.g. 0.0.0.0:8080; port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Shards (threads), overriding server.shards; 0 = one per core.
    #[arg(long)]
    shards: Option<usize>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsedge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `WSEDGE_LOG`, checked: a filter that does not parse fails the start.
fn log_filter() -> anyhow::Result<EnvFilter> {
    match std::env::var("WSEDGE_LOG") {
        Ok(filter) => EnvFilter::try_new(&filter).with_context(|| {
            format!("WSEDGE_LOG={filter:?} is not a log filter (e.g. info,wsedge=debug)")
        }),
        Err(_) => Ok(EnvFilter::new(DEFAULT_LOG)),
    }
}

/// Logs to stderr: text (coloured only on a terminal) or one JSON object a line.
fn init_log(format: LogFormat) -> anyhow::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter()?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let path = cli.config.or_else(|| {
        let default = PathBuf::from("config/wsedge.toml");
        default.exists().then_some(default)
    });
    // The config says how to log: while it is read, its warnings go to a plain text log.
    let reading = tracing_subscriber::fmt()
        .with_env_filter(log_filter()?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish();
    let config = tracing::subscriber::with_default(reading, || {
        let mut file = FileConfig::load(path.as_deref(), std::env::vars())?;
        if let Some(listen) = cli.listen {
            file.server.listen = listen;
        }
        if let Some(shards) = cli.shards {
            file.server.shards = shards;
        }
        file.validate()
    })?;
    init_log(config.log_format)?;

    match wsedge::runtime::raise_nofile_limit() {
        Ok((soft, hard)) => tracing::info!("open-file limit: soft {soft} raised to hard {hard}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }

    // Signal handlers go in before the server starts, so a signal can never hit the default action.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut terminate = {
        let _guard = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?
    };
    let shards = config.shards;
    let server = Server::start(config)?;
    println!(
        "wsedge listening on {} ({} shards)",
        server.local_addr(),
        shards
    );
    tracing::info!(addr = %server.local_addr(), shards, "listening");

    runtime.block_on(async {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
    });
    server.shutdown();
    tracing::info!("stopped");
    Ok(())
}
