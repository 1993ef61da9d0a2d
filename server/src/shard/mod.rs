//! A shard: one OS thread running a single-threaded tokio runtime (started by
//! [`crate::runtime`]) with its own SO_REUSEPORT listener. Connection state never leaves its shard
//! (it is `Rc`/`RefCell`, `!Send`); shards exchange messages only through their lock-free
//! [`mailbox::Mailbox`]es. The delivery rules live in the [`Broker`]; the shard feeds it and
//! applies the [`Effects`] it returns, after the broker's borrow has ended.

mod answer;
pub mod coalesce;
pub mod dispatch;
mod fanout;
pub mod health;
pub mod mailbox;
mod op_index;
pub mod refuse;
mod shared;
mod tick;
mod waiters;

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;

use wsedge_core::broker::{
    Action, Answer, Broker, BrokerConfig, DeliveryConfig, Effects, HistoryConfig, Origin, Peer,
    ShardMessage,
};
use wsedge_core::ids::{ConnId, IdMap, MessageIds};
use wsedge_core::message::Published;
use wsedge_core::protocol::{reply, Priority};

use crate::config::Config;
use crate::conn::{unix_ms, CloseKind, CloseReason, Conn, Identity};
use crate::notify::LocalNotify;
use crate::store;
use coalesce::Coalescer;
use mailbox::{Direct, Inbound};
pub use shared::{Pending, Shared, Slot};
use waiters::{PendingSend, Waiter};

/// Size of each shard's read buffer, shared by its connections (a connection keeps no read
/// buffer of its own while idle).
pub const READ_BUFFER_BYTES: usize = 64 << 10;

/// Shortest time between two delivery latency observations on one shard.
pub const LATENCY_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_micros(100);

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
    pending: RefCell<IdMap<u64, Waiter>>,
    /// Messages numbered here (their channel's home) to publish on this shard once the
    /// effects that carried them are applied.
    numbered: RefCell<Vec<Arc<Published>>>,
    /// Woken when the broker's next deadline moves earlier than `armed`.
    timer_changed: LocalNotify,
    /// The deadline the timer task sleeps until (unix ms).
    armed: Cell<Option<u64>>,
    /// Shard 0: a store canary is in flight (see [`health`]).
    canary: Cell<bool>,
    /// When this shard next observes a write's delivery latency (see [`Shard::sample_latency`]).
    next_latency_sample: Cell<std::time::Instant>,
    /// Publishes per channel since the last tick (at most [`tick::MAX_COUNTED_CHANNELS`]).
    channel_counts: RefCell<std::collections::HashMap<Box<str>, u64>>,
}

impl Shard {
    pub fn new(index: usize, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        // The inbox and dedup bounds are the server's; each shard keeps its share.
        let delivery = DeliveryConfig {
            inbox_max_bytes: config.delivery.inbox_max_bytes / config.shards,
            dedup_max_entries: config.delivery.dedup_max_entries.div_ceil(config.shards),
            max_durable_groups: config.delivery.max_durable_groups.div_ceil(config.shards),
            ..config.delivery.clone()
        };
        let broker = Broker::new(BrokerConfig {
            shard: index,
            shards: config.shards,
            presence_max_users: config.presence_max_users,
            max_subscriptions: config.max_subscriptions,
            max_batch_bytes: config.write_batch_bytes,
            delivery,
            history: HistoryConfig {
                max_bytes: config.history.max_bytes / config.shards,
                ..config.history
            },
            boot: shared.boot,
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
            numbered: RefCell::default(),
            timer_changed: LocalNotify::default(),
            armed: Cell::new(None),
            canary: Cell::new(false),
            channel_counts: RefCell::default(),
            next_latency_sample: Cell::new(std::time::Instant::now()),
            shared,
        }
    }

    /// Takes back what the store held for the users homed on this shard (before it serves).
    pub fn restore(&self, restore: store::Restored) {
        let now = unix_ms();
        let mut broker = self.broker.borrow_mut();
        for (user, seq, message) in restore.inbox {
            broker.restore_inbox(user, seq, message, now);
        }
        for (key, expires) in restore.dedup {
            broker.restore_dedup(key, expires, now);
        }
        for queue in restore.durable {
            broker.restore_durable(queue);
        }
        for (queue, seq, message) in restore.queues {
            broker.restore_queued(queue, seq, message, now);
        }
        broker.restore_history(restore.history, now);
        for (channel, seq, message) in restore.schedules {
            broker.restore_schedule(channel, seq, message);
        }
    }

    /// Runs the broker's deadlines (redeliveries, expiries) as they come due.
    pub async fn run_timers(&self) {
        loop {
            let next = self.broker.borrow().poll_timeout();
            self.armed.set(next);
            let Some(at) = next else {
                self.timer_changed.notified().await;
                continue;
            };
            let now = unix_ms();
            if at > now {
                let sleep = tokio::time::sleep(std::time::Duration::from_millis(at - now));
                tokio::select! {
                    _ = sleep => {}
                    _ = self.timer_changed.notified() => {}
                }
                continue;
            }
            self.broker(|broker, out| broker.handle_timeout(now, out));
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

    /// Whether the write made at `now` is one whose delivery latency is observed: the first
    /// after every [`LATENCY_SAMPLE_INTERVAL`] on this shard. At low rates that is every write;
    /// at hundreds of thousands a second, a time-spread sample of at most 10,000 a second per
    /// shard, so that measuring costs no more than noise on the fan-out path.
    pub fn sample_latency(&self, now: std::time::Instant) -> bool {
        if now < self.next_latency_sample.get() {
            return false;
        }
        self.next_latency_sample.set(now + LATENCY_SAMPLE_INTERVAL);
        true
    }

    /// An error reply, counted by its code.
    pub fn error(
        &self,
        reference: Option<&wsedge_core::protocol::envelope::Json<'_>>,
        code: wsedge_core::protocol::envelope::ErrorCode,
        text: &str,
    ) -> bytes::Bytes {
        self.metrics().errors[code as usize].inc();
        reply::error(reference, code, text)
    }

    /// This shard's metric cells.
    pub fn metrics(&self) -> &crate::metrics::ShardMetrics {
        self.shared.metrics.shard(self.index)
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
        let mut conns = self.conns.borrow_mut();
        conns.insert(id, conn.clone());
        self.metrics().connections.set(conns.len() as u64);
        drop(conns);
        let peer = Peer {
            lz4,
            user: identity.user,
            permissions: identity.permissions,
        };
        self.broker.borrow_mut().connect(id, peer);
        conn
    }

    /// The protocol connection `id` has been welcomed: what waits in its user's inbox may come.
    pub fn announce(&self, id: ConnId) {
        self.broker(|broker, out| broker.announce(id, unix_ms(), out));
    }

    /// The connection ended: it leaves the broker (and gets no more deliveries).
    pub fn disconnect(&self, id: ConnId) {
        self.broker(|broker, out| broker.disconnect(id, unix_ms(), out));
    }

    /// Registers a request (a group join, a presence query) whose answer (with `reference`)
    /// waits for another shard; the token to pass to the broker.
    pub fn pending(&self, conn: ConnId, reference: Option<String>) -> u64 {
        self.register(Waiter::Conn { conn, reference })
    }

    /// Registers a request of an HTTP handler; the token, and where its answer comes.
    pub fn pending_http(&self) -> (u64, tokio::sync::oneshot::Receiver<Answer>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (self.register(Waiter::Http(tx)), rx)
    }

    fn register(&self, waiter: Waiter) -> u64 {
        let token = self.next_send.get() + 1;
        self.next_send.set(token);
        self.pending.borrow_mut().insert(token, waiter);
        token
    }

    /// Forgets a request the broker refused.
    pub fn cancel_pending(&self, token: u64) {
        self.pending.borrow_mut().remove(&token);
    }

    /// The connection's task is over: the shard forgets it.
    pub fn remove(&self, id: ConnId) {
        let mut conns = self.conns.borrow_mut();
        conns.remove(&id);
        self.metrics().connections.set(conns.len() as u64);
        drop(conns);
        self.conn_ended.notify();
    }

    /// A message id unique across shards and restarts (see [`MessageIds`]).
    pub fn next_message_id(&self) -> String {
        self.message_ids.borrow_mut().next_id()
    }

    /// Calls the broker, then applies the effects it returned.
    pub fn broker<R>(&self, call: impl FnOnce(&mut Broker, &mut Effects) -> R) -> R {
        let mut effects = self.effects.borrow_mut();
        let (result, next) = {
            let mut broker = self.broker.borrow_mut();
            let result = call(&mut broker, &mut effects);
            (result, broker.poll_timeout())
        };
        if next.is_some_and(|at| self.armed.get().is_none_or(|armed| at < armed)) {
            self.armed.set(next);
            self.timer_changed.notify();
        }
        if !effects.is_empty() {
            self.apply(&mut effects);
        }
        drop(effects);
        if !self.numbered.borrow().is_empty() {
            let numbered = std::mem::take(&mut *self.numbered.borrow_mut());
            for message in &numbered {
                self.deliver_local(message);
            }
        }
        result
    }

    fn apply(&self, effects: &mut Effects) {
        let conns = self.conns.borrow();
        let metrics = self.metrics();
        effects.drain(|action| match action {
            Action::Deliver { message, to } => {
                let mut dropped = 0;
                for id in to {
                    if let Some(conn) = conns.get(id) {
                        dropped += u64::from(!conn.deliver(&message));
                    }
                }
                metrics.deliveries.add(to.len() as u64);
                if dropped > 0 {
                    metrics.dropped[message.priority as usize][0].add(dropped);
                }
            }
            Action::Frames {
                to,
                lane,
                frames,
                messages,
                born_us,
            } => {
                if let Some(conn) = conns.get(&to) {
                    metrics.deliveries.add(messages as u64);
                    if !conn.deliver_batch(lane, frames, born_us) {
                        metrics.dropped[lane as usize][0].add(messages as u64);
                    }
                }
            }
            Action::Arm => self.coalescer.arm(),
            Action::ToShard { shard, message } => self.send_to_shard(&conns, shard, message),
            Action::Broadcast { message } => {
                if let Err(full) = self.forward(&message) {
                    let others = self.shared.mailboxes.len() as u64 - 1;
                    metrics.dropped[message.priority as usize][1].add(others);
                    tracing::warn!(
                        shard = self.index,
                        "a message of {} (kept in its history) reached no other shard: shard {full}'s inbound queue is full",
                        message.channel
                    );
                }
                self.numbered.borrow_mut().push(message);
            }
            Action::Answer { origin, answer } if origin.shard == self.index => {
                self.answer(&conns, origin.token, answer);
            }
            Action::Answer { origin, answer } => {
                let token = origin.token;
                let answer = Inbound::Broker(Box::new(ShardMessage::Answer { token, answer }));
                self.shared.mailboxes[origin.shard].push_control(answer);
            }
            Action::Persist { token, records } => {
                if !self.shared.store.submit(self.index, token, records) {
                    tracing::warn!(shard = self.index, "the store's queue is full");
                    if let Some(token) = token {
                        let failed = Inbound::Stored { token, ok: false };
                        self.shared.mailboxes[self.index].push_control(failed);
                    }
                }
            }
            Action::Presence { token, snapshot } => {
                let query = self.pending.borrow_mut().remove(&token);
                if let Some(Waiter::Conn {
                    conn: id,
                    reference,
                }) = query
                {
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

    /// Hands a broker message to another shard: control through the never-refusing queue,
    /// messages and requests through the bounded one. When that is full, a request is answered
    /// `overloaded`; a message is dropped and logged (an acknowledged one is redelivered).
    fn send_to_shard(&self, conns: &IdMap<ConnId, Rc<Conn>>, shard: usize, message: ShardMessage) {
        let mailbox = &self.shared.mailboxes[shard];
        let Some((bytes, _)) = message.load() else {
            return mailbox.push_control(Inbound::Broker(Box::new(message)));
        };
        if mailbox.reserve(bytes) {
            return mailbox.push_reserved(Inbound::Broker(Box::new(message)));
        }
        match message.origin() {
            Some(origin) => {
                let refusal = wsedge_core::broker::Refusal::Overloaded(shard);
                let answer = Answer::Refused(refusal);
                if origin.shard == self.index {
                    self.answer(conns, origin.token, answer);
                } else {
                    let token = origin.token;
                    let answer = ShardMessage::Answer { token, answer };
                    self.shared.mailboxes[origin.shard]
                        .push_control(Inbound::Broker(Box::new(answer)));
                }
            }
            None => tracing::warn!(
                shard = self.index,
                to = shard,
                "a message was dropped: shard {shard}'s inbound queue is full"
            ),
        }
    }

    /// Answers the request registered as `token` (see [`Shard::pending`]): an `ok` only when it
    /// had a `ref`, an error always.
    fn answer(&self, conns: &IdMap<ConnId, Rc<Conn>>, token: u64, answer: Answer) {
        let gathering = matches!(self.pending.borrow().get(&token), Some(Waiter::Gather(_)));
        if gathering {
            return self.gathered(token, None, Some(answer));
        }
        let (id, reference) = match self.pending.borrow_mut().remove(&token) {
            Some(Waiter::Conn { conn, reference }) => (conn, reference),
            Some(Waiter::Http(reply)) => {
                let _ = reply.send(answer);
                return;
            }
            Some(Waiter::Gather(_)) | None => return,
        };
        let Some(conn) = conns.get(&id) else {
            return;
        };
        let Some(frame) = answer::frame(answer, reference.as_deref(), self.metrics()) else {
            return;
        };
        conn.send(Priority::Critical, frame);
    }

    /// Delivers `message` to this shard's subscribers of its channel; while the shard is busy,
    /// through the channel's batch at the next release.
    pub fn deliver_local(&self, message: &Arc<Published>) {
        self.deliver_here(message, None);
    }

    /// Delivers `message` here (see [`Shard::deliver_local`]) and puts it into this shard's
    /// queues of its channel; returns how many durable ones will answer `origin` (a persist
    /// publish's).
    fn deliver_here(&self, message: &Arc<Published>, origin: Option<Origin>) -> usize {
        let coalesce = !self.config().write_coalesce.is_zero() && !message.urgent;
        let batch = coalesce && coalesce::is_busy();
        self.broker(|broker, out| {
            broker.publish(message, batch, out);
            match broker.has_queues() {
                true => broker.route_queued(message, origin, unix_ms(), out),
                false => 0,
            }
        })
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
            Inbound::Broker(message) => {
                self.broker(|broker, out| broker.receive(*message, unix_ms(), out))
            }
            Inbound::Persist(persist) => {
                let (message, origin) = *persist;
                let waiting = self.deliver_here(&message, Some(origin));
                let persisted = Inbound::Persisted {
                    token: origin.token,
                    waiting,
                };
                // Room for the answer was reserved by the origin.
                self.shared.mailboxes[origin.shard].push_reserved(persisted);
            }
            Inbound::Persisted { token, waiting } => self.gathered(token, Some(waiting), None),
            Inbound::Stored { token, ok } => self.stored(token, ok),
            Inbound::Heartbeat { from } => self.shared.health.beat(self.index, from, unix_ms()),
            Inbound::Disconnect(order) => {
                let mut closed = 0;
                for conn in self.conns.borrow().values() {
                    if conn.is_open() && conn.user().is_some_and(|u| **u == *order.user) {
                        let status = Some((order.code, &*order.reason));
                        conn.close(status, CloseReason::Disconnected, CloseKind::Graceful, None);
                        closed += 1;
                    }
                }
                let _ = order.reply.send(closed);
            }
            Inbound::Stall { ms } => {
                tracing::warn!(
                    shard = self.index,
                    ms,
                    "fault injection: stalling this shard"
                );
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            Inbound::Delivered { send, count } => self.delivered(send, count),
        }
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
                CloseReason::Shutdown,
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
