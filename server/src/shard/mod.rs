//! Shards: one OS thread per shard, each running a single-threaded tokio runtime with its own
//! SO_REUSEPORT listener. Connection state never leaves its shard (it is `Rc`/`RefCell`, `!Send`);
//! shards exchange published messages only through their lock-free [`mailbox::Mailbox`]es.

pub mod batch;
pub mod channels;
pub mod coalesce;
pub mod mailbox;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::{Config, SocketBudget};
use crate::connection::{CloseKind, Conn};
use crate::message::Published;
use crate::notify::LocalNotify;
use channels::Channels;
use coalesce::Coalescer;
use mailbox::Mailbox;

/// Size of each shard's read buffer, shared by its connections (a connection keeps no read
/// buffer of its own while idle).
pub const READ_BUFFER_BYTES: usize = 64 << 10;

/// Messages a shard's router delivers before yielding to its connections.
const ROUTER_BATCH: usize = 1024;

/// How often a shard hands the memory its thread freed back to the OS (see [`return_memory`]).
pub const RETURN_MEMORY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Returns the memory this shard thread's allocator heap holds but no longer uses to the OS,
/// every [`RETURN_MEMORY_INTERVAL`]. mimalloc purges freed pages only when the thread that owns
/// them calls into it again (frees from other shards wait in its queue until then), so after a
/// burst a quiet shard would keep its peak forever without this.
async fn return_memory() {
    let mut tick = tokio::time::interval(RETURN_MEMORY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Not forced: it runs the purges that are due (measured: as low as a forced collection
        // after a flood, see results/).
        // SAFETY: mi_collect only walks this thread's own heap; it takes no pointer.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// What all shards share: read-only config, the socket counts, the mailboxes.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    /// `max_connections` resolved against the open-file limit.
    pub budget: SocketBudget,
    /// WebSocket connections (see [`Slot`]).
    pub connections: AtomicUsize,
    /// TCP connections still in the HTTP phase (see [`Pending`]).
    pub pending: AtomicUsize,
    pub mailboxes: Box<[Mailbox]>,
    /// Connections per client address.
    pub per_ip: Arc<crate::per_ip::PerIp>,
    /// The TLS config, when `[tls]` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Start time in unix microseconds: no two starts share it, so message ids stay unique
    /// across restarts, however quick.
    pub boot: u64,
}

impl Shared {
    pub fn new(
        config: Config,
        budget: SocketBudget,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let mailboxes = (0..config.shards)
            .map(|_| Mailbox::new(config.shard_queue_capacity, config.shard_queue_max_bytes))
            .collect();
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let per_ip = Arc::new(crate::per_ip::PerIp::new(
            config.max_connections_per_ip,
            config.new_connections_per_ip_per_s,
        ));
        Shared {
            per_ip,
            config,
            budget,
            connections: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            mailboxes,
            tls,
            boot,
        }
    }
}

/// Adds one to `counter` unless it is at `max`; the caller gives it back on drop.
fn try_increment(counter: &AtomicUsize, max: usize) -> bool {
    if counter.fetch_add(1, Ordering::AcqRel) >= max {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// A reserved place under `max_connections`, released on drop.
#[derive(Debug)]
pub struct Slot(Arc<Shared>);

impl Slot {
    /// Reserves a connection slot, or `None` at `max_connections`.
    pub fn acquire(shared: &Arc<Shared>) -> Option<Slot> {
        try_increment(&shared.connections, shared.budget.max_connections)
            .then(|| Slot(shared.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP connection in the HTTP phase, counted against `server.handshake_budget_bytes` and,
/// with the WebSocket connections, against the sockets the open-file limit allows.
#[derive(Debug)]
pub struct Pending(Arc<Shared>);

impl Pending {
    /// Admits a newly accepted connection, or `None` when it must be answered 503.
    pub fn acquire(shared: &Arc<Shared>) -> Option<Pending> {
        let open = shared.connections.load(Ordering::Acquire);
        let max = shared
            .config
            .max_pending_handshakes
            .min(shared.budget.max_sockets.saturating_sub(open));
        try_increment(&shared.pending, max).then(|| Pending(shared.clone()))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One shard's state, owned by its thread.
pub struct Shard {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub channels: RefCell<Channels>,
    pub conns: RefCell<HashMap<u64, Rc<Conn>>>,
    pub read_buffer: RefCell<Box<[u8]>>,
    pub json_buffers: RefCell<simd_json::Buffers>,
    next_conn: Cell<u64>,
    next_message: Cell<u64>,
    /// Set once shutdown has begun.
    pub closing: Cell<bool>,
    /// Notified whenever a connection ends (shutdown waits on it).
    pub conn_ended: LocalNotify,
    /// Connections holding deliveries back for `write_coalesce`.
    pub coalescer: Coalescer,
}

impl Shard {
    pub fn new(index: usize, shared: Arc<Shared>) -> Self {
        Shard {
            index,
            shared,
            channels: RefCell::default(),
            conns: RefCell::default(),
            read_buffer: RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice()),
            json_buffers: RefCell::new(simd_json::Buffers::new(1024)),
            next_conn: Cell::new(0),
            next_message: Cell::new(0),
            closing: Cell::new(false),
            conn_ended: LocalNotify::default(),
            coalescer: Coalescer::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A connection id unique in this process: shard in the top 16 bits.
    pub fn next_conn_id(&self) -> u64 {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        (self.index as u64) << 48 | n
    }

    /// A message id unique across shards and restarts: `<boot>-<shard>-<seq>` (hex).
    pub fn next_message_id(&self) -> String {
        let n = self.next_message.get() + 1;
        self.next_message.set(n);
        format!("{:x}-{:x}-{:x}", self.shared.boot, self.index, n)
    }

    /// Delivers `message` to this shard's subscribers of its channel; while the shard is busy,
    /// through the channel's batch at the next release (see [`batch`]).
    pub fn deliver_local(&self, message: &Arc<Published>) {
        let config = self.config();
        let batch = !config.write_coalesce.is_zero() && coalesce::is_busy();
        let max_bytes = config.write_batch_bytes;
        if self
            .channels
            .borrow_mut()
            .publish(message, batch, max_bytes)
        {
            self.coalescer.arm();
        }
    }

    /// Sends `message` to every other shard, or to none: when one shard's queue has no room,
    /// nothing is queued anywhere and that shard's index is returned.
    pub fn forward(&self, message: &Arc<Published>) -> Result<(), usize> {
        let bytes = message.frame.len();
        let others = || {
            let index = self.index;
            self.shared
                .mailboxes
                .iter()
                .enumerate()
                .filter(move |(i, _)| *i != index)
        };
        if let Some((full, _)) = others().find(|(_, mailbox)| !mailbox.reserve(bytes)) {
            others()
                .take_while(|(i, _)| *i != full)
                .for_each(|(_, mailbox)| mailbox.cancel(bytes));
            return Err(full);
        }
        others().for_each(|(_, mailbox)| mailbox.push_reserved(message.clone()));
        Ok(())
    }

    /// Starts closing every connection with 1001 and marks the shard closing.
    pub fn begin_shutdown(&self) {
        self.closing.set(true);
        self.channels.borrow_mut().deliver_batches();
        let grace = self.config().shutdown_grace;
        for conn in self.conns.borrow().values() {
            conn.close(
                Some((1001, "server shutting down")),
                CloseKind::Graceful,
                Some(grace),
            );
        }
    }

    /// Resolves once this shard has no connections left.
    pub async fn connections_ended(&self) {
        while !self.conns.borrow().is_empty() {
            self.conn_ended.notified().await;
        }
    }
}

/// Delivers messages other shards forward to this one.
pub async fn route(shard: Rc<Shard>) {
    let mailbox = &shard.shared.mailboxes[shard.index];
    loop {
        let first = mailbox.pop().await;
        let batch = std::iter::once(first).chain(std::iter::from_fn(|| mailbox.try_pop()));
        for message in batch.take(ROUTER_BATCH) {
            shard.deliver_local(&message);
            coalesce::count_frame();
        }
        tokio::task::yield_now().await;
    }
}

/// Runs shard `index` on the current thread until `shutdown` turns true and its connections
/// have closed (or `shutdown_grace` has passed).
pub fn run(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    shared.mailboxes[index].set_owner();
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
        let router = tokio::task::spawn_local(route(shard.clone()));
        let collector = tokio::task::spawn_local(return_memory());
        let coalescer = {
            let shard = shard.clone();
            let interval = shard.config().write_coalesce;
            tokio::task::spawn_local(async move {
                let batches = || shard.channels.borrow_mut().deliver_batches();
                shard.coalescer.run(interval, batches).await
            })
        };
        tokio::select! {
            _ = crate::listener::accept_loop(listener, shard.clone()) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        let open = shard.conns.borrow().len();
        tracing::info!(shard = index, open, "shutting down: closing connections");
        shard.begin_shutdown();
        let grace = shard.config().shutdown_grace;
        if tokio::time::timeout(grace, shard.connections_ended())
            .await
            .is_err()
        {
            tracing::warn!(
                shard = index,
                left = shard.conns.borrow().len(),
                "shutdown grace over; dropping the rest"
            );
        }
        router.abort();
        coalescer.abort();
        collector.abort();
    });
}
