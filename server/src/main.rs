//! The `wsedge` binary: reads the config, starts the shards, waits for SIGTERM/SIGINT.

use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsedge::{FileConfig, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WSEDGE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,fjall=warn,lsm_tree=warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let path = cli.config.or_else(|| {
        let default = PathBuf::from("config/wsedge.toml");
        default.exists().then_some(default)
    });
    let mut file = FileConfig::load(path.as_deref(), std::env::vars())?;
    if let Some(listen) = cli.listen {
        file.server.listen = listen;
    }
    if let Some(shards) = cli.shards {
        file.server.shards = shards;
    }
    let config = file.validate()?;

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
