//! What every shard shares: the read-only config, the socket counts, the mailboxes and the
//! store's queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use wsedge_core::auth::Verifier;

use super::mailbox::{try_increment, Inbound, Mailbox};
use crate::config::{Config, SocketBudget};
use crate::metrics::{Live, Metrics};
use crate::store::{self, Store, StoreError};

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
    pub mailboxes: Arc<[Mailbox]>,
    /// The durable store's queue.
    pub store: Store,
    /// Connections per client address.
    pub per_ip: Arc<crate::per_ip::PerIp>,
    /// The TLS config, when `[tls]` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Checks tokens, when `[auth]` has a key.
    pub verifier: Option<Verifier>,
    /// Heartbeats between shards and the store's canary, for `/health`.
    pub health: super::health::Health,
    /// The monitor's figures and alert states (see `crate::monitor`).
    pub board: crate::alerts::Board,
    /// Each shard's busiest channels of its last tick.
    pub top_channels: Box<[arc_swap::ArcSwap<TopChannels>]>,
    /// Every shard's and the store's metric cells.
    pub metrics: Arc<Metrics>,
    /// Start time in unix microseconds: no two starts share it, so message ids stay unique
    /// across restarts, however quick.
    pub boot: u64,
}

impl Shared {
    /// The shards' shared state; starts the store's thread (returned), which confirms writes
    /// through the mailboxes.
    pub fn new(
        config: Config,
        budget: SocketBudget,
        tls: Option<Arc<rustls::ServerConfig>>,
        store: store::Opened,
    ) -> Result<(Self, std::thread::JoinHandle<()>), StoreError> {
        let mailboxes: Arc<[Mailbox]> = (0..config.shards)
            .map(|_| Mailbox::new(config.shard_queue_capacity, config.shard_queue_max_bytes))
            .collect();
        let confirm = {
            let mailboxes = mailboxes.clone();
            move |shard: usize, token, ok| {
                mailboxes[shard].push_control(Inbound::Stored { token, ok });
            }
        };
        let shards = config.shards;
        let metrics = Arc::new(Metrics::new(shards));
        let (store, store_thread) = store.start(Box::new(confirm), metrics.clone())?;
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let per_ip = Arc::new(crate::per_ip::PerIp::new(
            config.max_connections_per_ip,
            config.new_connections_per_ip_per_s,
        ));
        let shared = Shared {
            verifier: config.auth.verifier(),
            per_ip,
            config,
            budget,
            connections: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            mailboxes,
            store,
            tls,
            boot,
            health: super::health::Health::new(shards, crate::conn::unix_ms()),
            board: crate::alerts::Board::default(),
            top_channels: (0..shards).map(|_| Default::default()).collect(),
            metrics,
        };
        Ok((shared, store_thread))
    }
}

impl Shared {
    /// What a scrape of `/metrics` reads outside the metric cells.
    pub fn live(&self) -> Live {
        let now = crate::conn::unix_ms();
        let alerts = self.board.statuses().into_iter();
        Live {
            max_connections: self.budget.max_connections,
            pending_handshakes: self.pending.load(Ordering::Relaxed),
            queues: self
                .mailboxes
                .iter()
                .map(|m| (m.queued_messages(), m.queued_bytes()))
                .collect(),
            heartbeat_age_s: self.health.oldest_beat_ms(now) as f64 / 1e3,
            store_confirmed_age_s: self.health.canary_age_ms(now) as f64 / 1e3,
            healthy: self.health.failing(now).is_empty(),
            alerts: alerts
                .filter(|a| matches!(a.state, "pending" | "firing"))
                .map(|a| (a.name, a.state))
                .collect(),
        }
    }
}

/// A shard's busiest channels: (channel, publishes in a tick).
pub type TopChannels = Vec<(Box<str>, u64)>;

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
