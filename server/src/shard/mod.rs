//! A shard: one OS thread running a single-threaded tokio runtime (started by
//! [`crate::runtime`]) with its own SO_REUSEPORT listener. Connection state never leaves its shard
//! (it is `Rc`/`RefCell`, `!Send`); shards exchange messages only through their lock-free
//! [`mailbox::Mailbox`]es. The delivery rules live in the [`Broker`]; the shard feeds it and
//! applies the [`Effects`] it returns, after the broker's borrow has ended.

pub mod coalesce;
pub mod dispatch;
pub mod mailbox;

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use wsedge_core::auth::Verifier;
use wsedge_core::broker::{Action, Broker, BrokerConfig, Effects, Peer, ShardMessage};
use wsedge_core::ids::{ConnId, IdMap, MessageIds};
use wsedge_core::message::Published;
use wsedge_core::protocol::{reply, Priority};

use crate::config::{Config, SocketBudget};
use crate::conn::{CloseKind, Conn, Identity};
use crate::notify::LocalNotify;
use coalesce::Coalescer;
use mailbox::{try_increment, Direct, Inbound, Mailbox};

/// Size of each shard's read buffer, shared by its connections (a connection keeps no read
/// buffer of its own while idle).
pub const READ_BUFFER_BYTES: usize = 64 << 10;

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
    /// Checks tokens, when `[auth]` has a key.
    pub verifier: Option<Verifier>,
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
            verifier: config.auth.verifier(),
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
    index: usize,
    shared: Arc<Shared>,
    broker: RefCell<Broker>,
    /// The broker's effects, applied after each call (the buffer is reused).
    effects: RefCell<Effects>,
    conns: RefCell<IdMap<ConnId, Rc<Conn>>>,
    read_buffer: RefCell<Box<[u8]>>,
    json_buffers: RefCell<simd_json::Buffers>,
    next_conn: Cell<u64>,
    message_ids: RefCell<MessageIds>,
    /// Set once shutdown has begun.
    closing: Cell<bool>,
    /// Notified whenever a connection ends (shutdown waits on it).
    conn_ended: LocalNotify,
    /// Connections holding deliveries back for `write_coalesce`.
    coalescer: Coalescer,
    /// Direct messages sent from this shard, waiting for the other shards' counts.
    sends: RefCell<IdMap<u64, PendingSend>>,
    next_send: Cell<u64>,
    /// Group joins and presence queries waiting for another shard's answer: token →
    /// (connection, encoded `ref`).
    pending: RefCell<IdMap<u64, (ConnId, Option<String>)>>,
}

/// A direct message whose `ok` waits for the other shards to say how many connections it reached.
#[derive(Debug)]
struct PendingSend {
    conn: ConnId,
    /// The request's `ref`, encoded; no `ok` without one.
    reference: Option<String>,
    delivered: usize,
    waiting: usize,
}

impl Shard {
    pub fn new(index: usize, shared: Arc<Shared>) -> Self {
        let broker = Broker::new(BrokerConfig {
            shard: index,
            shards: shared.config.shards,
            presence_max_users: shared.config.presence_max_users,
            max_subscriptions: shared.config.max_subscriptions,
            max_batch_bytes: shared.config.write_batch_bytes,
        });
        Shard {
            index,
            broker: RefCell::new(broker),
            effects: RefCell::default(),
            conns: RefCell::default(),
            read_buffer: RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice()),
            json_buffers: RefCell::new(simd_json::Buffers::new(1024)),
            next_conn: Cell::new(0),
            message_ids: RefCell::new(MessageIds::new(shared.boot, index)),
            closing: Cell::new(false),
            conn_ended: LocalNotify::default(),
            coalescer: Coalescer::default(),
            sends: RefCell::default(),
            next_send: Cell::new(0),
            pending: RefCell::default(),
            shared,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Whether shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    pub fn coalescer(&self) -> &Coalescer {
        &self.coalescer
    }

    /// The shard's read buffer, which every connection reads into in turn.
    pub fn read_buffer(&self) -> RefMut<'_, Box<[u8]>> {
        self.read_buffer.borrow_mut()
    }

    /// simd-json's scratch buffers, shared by the shard's connections.
    pub fn json_buffers(&self) -> RefMut<'_, simd_json::Buffers> {
        self.json_buffers.borrow_mut()
    }

    /// Registers a new connection with the shard and its broker.
    pub fn open(&self, lz4: bool, identity: Identity) -> Rc<Conn> {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        let id = ConnId::new(self.index, n);
        let conn = Rc::new(Conn::new(
            id,
            lz4,
            self.config().outbox_max_bytes,
            &identity,
        ));
        self.conns.borrow_mut().insert(id, conn.clone());
        let peer = Peer {
            lz4,
            user: identity.user,
            permissions: identity.permissions,
        };
        self.broker.borrow_mut().connect(id, peer);
        conn
    }

    /// The connection ended: it leaves the broker (and gets no more deliveries).
    pub fn disconnect(&self, id: ConnId) {
        self.broker(|broker, out| broker.disconnect(id, out));
    }

    /// Registers a request (a group join, a presence query) whose answer (with `reference`)
    /// waits for another shard; the token to pass to the broker.
    pub fn pending(&self, conn: ConnId, reference: Option<String>) -> u64 {
        let token = self.next_send.get() + 1;
        self.next_send.set(token);
        self.pending.borrow_mut().insert(token, (conn, reference));
        token
    }

    /// Forgets a request the broker refused.
    pub fn cancel_pending(&self, token: u64) {
        self.pending.borrow_mut().remove(&token);
    }

    /// The connection's task is over: the shard forgets it.
    pub fn remove(&self, id: ConnId) {
        self.conns.borrow_mut().remove(&id);
        self.conn_ended.notify();
    }

    /// A message id unique across shards and restarts (see [`MessageIds`]).
    pub fn next_message_id(&self) -> String {
        self.message_ids.borrow_mut().next_id()
    }

    /// Calls the broker, then applies the effects it returned.
    pub fn broker<R>(&self, call: impl FnOnce(&mut Broker, &mut Effects) -> R) -> R {
        let mut effects = self.effects.borrow_mut();
        let result = call(&mut self.broker.borrow_mut(), &mut effects);
        if !effects.is_empty() {
            self.apply(&mut effects);
        }
        result
    }

    fn apply(&self, effects: &mut Effects) {
        let conns = self.conns.borrow();
        effects.drain(|action| match action {
            Action::Deliver { message, to } => {
                for id in to {
                    if let Some(conn) = conns.get(id) {
                        conn.deliver(&message);
                    }
                }
            }
            Action::Frames { to, lane, frames } => {
                if let Some(conn) = conns.get(&to) {
                    conn.deliver_batch(lane, frames);
                }
            }
            Action::Arm => self.coalescer.arm(),
            Action::ToShard { shard, message } => self.send_to_shard(shard, message),
            Action::Joined { token } => {
                let join = self.pending.borrow_mut().remove(&token);
                if let Some((id, Some(reference))) = join {
                    if let Some(conn) = conns.get(&id) {
                        conn.send(Priority::Critical, reply::ok_raw(&reference));
                    }
                }
            }
            Action::Presence { token, snapshot } => {
                let query = self.pending.borrow_mut().remove(&token);
                if let Some((id, reference)) = query {
                    if let Some(conn) = conns.get(&id) {
                        let frame = reply::presence(
                            reference.as_deref(),
                            &snapshot.channel,
                            snapshot.connections,
                            &snapshot.users,
                            snapshot.truncated,
                        );
                        conn.send(Priority::Critical, frame);
                    }
                }
            }
        });
    }

    /// Hands a broker message to another shard: control through the never-refusing queue, a
    /// group's message through the bounded one (dropped, and logged, when that shard is full).
    fn send_to_shard(&self, shard: usize, message: ShardMessage) {
        let mailbox = &self.shared.mailboxes[shard];
        let Some(bytes) = message.message().map(|m| m.frame.len()) else {
            return mailbox.push_control(Inbound::Broker(Box::new(message)));
        };
        if mailbox.reserve(bytes) {
            mailbox.push_reserved(Inbound::Broker(Box::new(message)));
        } else {
            tracing::warn!(
                shard = self.index,
                to = shard,
                "a queue group's message was dropped: shard {shard}'s inbound queue is full"
            );
        }
    }

    /// Delivers `message` to this shard's subscribers of its channel; while the shard is busy,
    /// through the channel's batch at the next release.
    pub fn deliver_local(&self, message: &Arc<Published>) {
        let batch = !self.config().write_coalesce.is_zero() && coalesce::is_busy();
        self.broker(|broker, out| broker.publish(message, batch, out));
    }

    /// Sends the channel batches waiting for this release.
    pub fn release(&self) {
        self.broker(|broker, out| broker.release(out));
    }

    /// Handles what another shard sent.
    pub fn receive(&self, inbound: Inbound) {
        match inbound {
            Inbound::Publish(message) => self.deliver_local(&message),
            Inbound::Direct(direct) => {
                let Direct {
                    user,
                    message,
                    origin,
                    send,
                } = *direct;
                let count = self.broker(|broker, out| broker.send_local(&user, &message, out));
                // Room for the answer was reserved by the origin.
                self.shared.mailboxes[origin].push_reserved(Inbound::Delivered { send, count });
            }
            Inbound::Broker(message) => self.broker(|broker, out| broker.receive(*message, out)),
            Inbound::Delivered { send, count } => {
                let mut sends = self.sends.borrow_mut();
                let Some(pending) = sends.get_mut(&send) else {
                    return;
                };
                pending.delivered += count;
                pending.waiting -= 1;
                if pending.waiting == 0 {
                    let done = sends.remove(&send).expect("present");
                    drop(sends);
                    self.answer_send(done);
                }
            }
        }
    }

    /// Sends a direct message to every connection of `user`, on every shard, or to none: when a
    /// shard's queue (or this shard's, for the answers) has no room, nothing is sent and that
    /// shard's index is returned. With `reference`, the sender gets
    /// `{"op":"ok","ref":...,"delivered":N}` once every shard has counted.
    pub fn send_direct(
        &self,
        from: ConnId,
        user: &str,
        message: Arc<Published>,
        reference: Option<String>,
    ) -> Result<(), usize> {
        let others = self.shared.mailboxes.len() - 1;
        if others > 0 {
            let own = &self.shared.mailboxes[self.index];
            if let Some(reserved) = (0..others).position(|_| !own.reserve(0)) {
                (0..reserved).for_each(|_| own.cancel(0));
                return Err(self.index);
            }
            if let Err(full) = self.reserve_others(message.frame.len()) {
                (0..others).for_each(|_| own.cancel(0));
                return Err(full);
            }
        }
        let delivered = self.broker(|broker, out| broker.send_local(user, &message, out));
        let pending = PendingSend {
            conn: from,
            reference,
            delivered,
            waiting: others,
        };
        if others == 0 {
            self.answer_send(pending);
            return Ok(());
        }
        let n = self.next_send.get() + 1;
        self.next_send.set(n);
        self.sends.borrow_mut().insert(n, pending);
        let user: Arc<str> = user.into();
        for (_, mailbox) in self.others() {
            mailbox.push_reserved(Inbound::Direct(Box::new(Direct {
                user: user.clone(),
                message: message.clone(),
                origin: self.index,
                send: n,
            })));
        }
        Ok(())
    }

    fn answer_send(&self, done: PendingSend) {
        let Some(reference) = done.reference else {
            return;
        };
        if let Some(conn) = self.conns.borrow().get(&done.conn) {
            conn.send(
                Priority::Critical,
                reply::ok_delivered(&reference, done.delivered),
            );
        }
    }

    /// Every other shard's mailbox, with its index.
    fn others(&self) -> impl Iterator<Item = (usize, &Mailbox)> + Clone {
        let index = self.index;
        self.shared
            .mailboxes
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != index)
    }

    /// Reserves room for one message of `bytes` in every other shard's mailbox, or in none (the
    /// index of a full one).
    fn reserve_others(&self, bytes: usize) -> Result<(), usize> {
        if let Some((full, _)) = self.others().find(|(_, mailbox)| !mailbox.reserve(bytes)) {
            self.others()
                .take_while(|(i, _)| *i != full)
                .for_each(|(_, mailbox)| mailbox.cancel(bytes));
            return Err(full);
        }
        Ok(())
    }

    /// Sends `message` to every other shard, or to none: when one shard's queue has no room,
    /// nothing is queued anywhere and that shard's index is returned.
    pub fn forward(&self, message: &Arc<Published>) -> Result<(), usize> {
        self.reserve_others(message.frame.len())?;
        for (_, mailbox) in self.others() {
            mailbox.push_reserved(Inbound::Publish(message.clone()));
        }
        Ok(())
    }

    /// Connections open on this shard.
    pub fn open_connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Starts closing every connection with 1001 and marks the shard closing.
    pub fn begin_shutdown(&self) {
        self.closing.set(true);
        self.release();
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
