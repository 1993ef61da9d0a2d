//! Starting and stopping a server: binds every shard's listener, starts the shard threads, and
//! on [`Server::shutdown`] has each shard stop accepting, send close 1001 and drain.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::config::Config;
use crate::shard::{self, Shared};
use crate::tls::TlsError;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot start a shard: {0}")]
    Thread(io::Error),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Loads `[tls]`, binds `config.listen` once per shard and starts the shards.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::server_config(
                &files.cert_file,
                &files.key_file,
            )?),
            None => None,
        };
        let shards = config.shards;
        let addr = config.listen;
        let listen = |source| StartError::Listen { addr, source };
        let listeners =
            crate::listener::bind(addr, config.listen_backlog, shards).map_err(listen)?;
        let local_addr = listeners[0].local_addr().map_err(listen)?;
        let budget = config.socket_budget(nofile_limit().map_err(StartError::Thread)?);
        tracing::info!(
            max_connections = budget.max_connections,
            max_sockets = budget.max_sockets,
            "connection limits"
        );
        let shared = Arc::new(Shared::new(config, budget, tls));
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(shards);
        for (index, listener) in listeners.into_iter().enumerate() {
            let (shared, stopped) = (shared.clone(), stopped.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wsedge-shard-{index}"))
                    .spawn(move || shard::run(index, listener, shared, stopped))
                    .map_err(StartError::Thread)?,
            );
        }
        Ok(Server {
            local_addr,
            stop,
            threads,
        })
    }

    /// The address the shards listen on (the real port when `listen` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection with 1001 and waits until they have drained or
    /// `shutdown_grace` has passed.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

/// The open-file soft limit in force.
fn nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// Raises the soft open-file limit to the hard limit; returns (soft before, hard).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((before, limit.rlim_max))
    }
}
