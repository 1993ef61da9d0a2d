//! The wiring: binds every shard's listener, starts one thread per shard with its runtime and
//! tasks (accept loop, mailbox router, coalescer, tick), and on [`Server::shutdown`]
//! has each shard stop accepting, send close 1001 and drain.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use wsedge_core::broker::{queue_group, Broker};

use crate::config::Config;
use crate::shard::{coalesce, Shard, Shared};
use crate::store::{self, Restored, StoreError};
use crate::tls::TlsError;

/// Messages a shard's router handles before yielding to its connections.
const ROUTER_BATCH: usize = 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot start a shard: {0}")]
    Thread(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    store_thread: JoinHandle<()>,
    monitor: JoinHandle<()>,
    monitor_stop: Arc<AtomicBool>,
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
        let (opened, restored) = store::open(&config.store, crate::conn::unix_ms())?;
        tracing::info!(
            path = %config.store.path.display(),
            inbox_messages = restored.inbox.len(),
            dedup_keys = restored.dedup.len(),
            dead_letters = restored.dead_letters,
            "store open"
        );
        let mut restores = split(restored, shards).into_iter();
        let (shared, store_thread) = Shared::new(config, budget, tls, opened)?;
        let shared = Arc::new(shared);
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(shards);
        for (index, listener) in listeners.into_iter().enumerate() {
            let (shared, stopped) = (shared.clone(), stopped.clone());
            let restore = restores.next().unwrap_or_default();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wsedge-shard-{index}"))
                    .spawn(move || run_shard(index, listener, shared, stopped, restore))
                    .map_err(StartError::Thread)?,
            );
        }
        let monitor_stop = Arc::new(AtomicBool::new(false));
        let monitor = crate::monitor::start(shared.clone(), monitor_stop.clone())
            .map_err(StartError::Thread)?;
        Ok(Server {
            local_addr,
            stop,
            threads,
            shared,
            store_thread,
            monitor,
            monitor_stop,
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
        self.monitor_stop.store(true, Ordering::Relaxed);
        if self.monitor.join().is_err() {
            tracing::error!("the monitor thread panicked");
        }
        self.shared.store.close();
        if self.store_thread.join().is_err() {
            tracing::error!("the store thread panicked");
        }
    }
}

/// Hands each shard what the store held for the users, groups and channels homed on it.
fn split(restored: Restored, shards: usize) -> Vec<Restored> {
    let mut parts: Vec<Restored> = (0..shards).map(|_| Restored::default()).collect();
    for (user, seq, message) in restored.inbox {
        parts[Broker::user_home(&user, shards)]
            .inbox
            .push((user, seq, message));
    }
    let group_home = |queue: &str| queue_group(queue).map(|key| key.home(shards));
    for (queue, seq, message) in restored.queues {
        if let Some(home) = group_home(&queue) {
            parts[home].queues.push((queue, seq, message));
        }
    }
    for queue in restored.durable {
        if let Some(home) = group_home(&queue) {
            parts[home].durable.push(queue);
        }
    }
    for (channel, seq, message) in restored.schedules {
        let home = Broker::channel_home(&channel, shards);
        parts[home].schedules.push((channel, seq, message));
    }
    for (channel, offset, epoch, message) in restored.history {
        let home = Broker::channel_home(&channel, shards);
        parts[home].history.push((channel, offset, epoch, message));
    }
    for (key, expires) in restored.dedup {
        // Keys are `user:<id>`, `group:<group>@<channel>` or `channel:<channel>` (a durable
        // history publish's), NUL, `<msg_id>`.
        let destination = key.split('\0').next().unwrap_or("");
        let user = destination.strip_prefix("user:").unwrap_or(destination);
        let home = match destination.strip_prefix("channel:") {
            Some(channel) => Broker::channel_home(channel, shards),
            None => group_home(destination).unwrap_or_else(|| Broker::user_home(user, shards)),
        };
        parts[home].dedup.push((key, expires));
    }
    parts
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

/// Handles what other shards send this one.
async fn route(shard: Rc<Shard>) {
    let mailbox = &shard.shared().mailboxes[shard.index()];
    loop {
        let first = mailbox.pop().await;
        let batch = std::iter::once(first).chain(std::iter::from_fn(|| mailbox.try_pop()));
        for inbound in batch.take(ROUTER_BATCH) {
            shard.receive(inbound);
            coalesce::count_frame();
        }
        tokio::task::yield_now().await;
    }
}

/// Runs shard `index` on the current thread until `shutdown` turns true and its connections
/// have closed (or `shutdown_grace` has passed).
fn run_shard(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    restore: Restored,
) {
    shared.mailboxes[index].set_owner();
    shared.metrics.shard(index).set_thread();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(coalesce::park_until_release)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(shard = index, "cannot build runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(shard = index, "cannot register listener: {e}");
                return;
            }
        };
        let shard = Rc::new(Shard::new(index, shared));
        shard.restore(restore);
        let router = tokio::task::spawn_local(route(shard.clone()));
        let timers = {
            let shard = shard.clone();
            tokio::task::spawn_local(async move { shard.run_timers().await })
        };
        let ticker = {
            let shard = shard.clone();
            tokio::task::spawn_local(async move { shard.run_tick().await })
        };
        let coalescer = {
            let shard = shard.clone();
            let interval = shard.config().write_coalesce;
            tokio::task::spawn_local(async move {
                shard.coalescer().run(interval, || shard.release()).await
            })
        };
        tokio::select! {
            _ = crate::listener::accept_loop(listener, shard.clone()) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        let open = shard.open_connections();
        tracing::info!(shard = index, open, "shutting down: closing connections");
        shard.begin_shutdown();
        let grace = shard.config().shutdown_grace;
        if tokio::time::timeout(grace, shard.connections_ended())
            .await
            .is_err()
        {
            tracing::warn!(
                shard = index,
                left = shard.open_connections(),
                "shutdown grace over; dropping the rest"
            );
        }
        router.abort();
        timers.abort();
        coalescer.abort();
        ticker.abort();
    });
}
