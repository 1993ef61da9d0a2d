//! A WebSocket connection: the shard-local handle [`Conn`] that deliveries, replies and closes are
//! queued on, free of IO, and in [`session`] the task that reads, writes and keeps time for it
//! over its [`transport::Stream`].
//!
//! Lifecycle: `Open` → `Closing` (a close frame is queued: ours, or our reply to the peer's) →
//! ended (close written and, when we started it, answered; or a deadline passed) → a short
//! lingering half-close so the peer reads our close frame before the socket goes away.

pub mod session;
pub mod transport;

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wsedge_core::auth::Permissions;
use wsedge_core::broker::Load;
use wsedge_core::ids::ConnId;
use wsedge_core::message::Published;
use wsedge_core::outbox::{Outbox, Push};
use wsedge_core::protocol::frame::{self, OpCode};
use wsedge_core::protocol::Priority;

pub use crate::metrics::CloseReason;
use crate::notify::LocalNotify;

/// Who is at the other end of a connection, as its token says (see `[auth]`).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The token's `sub`; `None` when anonymous.
    pub user: Option<Arc<str>>,
    /// The token's `exp`, Unix seconds.
    pub expires_at: Option<u64>,
    pub permissions: Arc<Permissions>,
    /// The server API's own connection (see `crate::http::api`): no socket, may schedule
    /// without a user.
    pub api: bool,
}

/// Now in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Unix time in milliseconds: the broker's clock (deadlines it keeps survive restarts).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The instant a Unix time (in seconds) falls on.
fn instant_of(unix_s: u64) -> Instant {
    Instant::now() + Duration::from_secs(unix_s.saturating_sub(unix_now()))
}

/// Where a connection stands with write coalescing (see [`crate::shard::coalesce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hold {
    /// Writes when it has something to write (unless it wrote within the interval).
    #[default]
    Free,
    /// Waiting for the shard's next release.
    Held,
    /// Released: writes what it has, then is free again.
    Released,
}

/// What a connection's path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: protocol v1 JSON envelopes.
    Protocol,
    /// `/echo`: every message echoed verbatim.
    Echo,
}

/// How a close proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Send what is queued, then close, then wait for the peer's close frame.
    Graceful,
    /// Send what is queued, then close, without waiting for the peer (answering the peer's
    /// close, or failing the connection on a protocol error).
    Final,
    /// Discard what is queued and send close (a slow consumer: its queue is the problem).
    Discard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closing { await_peer: bool },
}

/// The shard-local handle of a connection.
pub struct Conn {
    id: ConnId,
    /// The client chose `wsedge.v1.lz4`.
    lz4: bool,
    outbox: RefCell<Outbox>,
    wake: LocalNotify,
    phase: Cell<Phase>,
    /// Something queued must go out without waiting for `connection.write_coalesce_us`: a reply,
    /// a ping or pong, a close, a critical message. Cleared once the outbox is empty.
    urgent: Cell<bool>,
    hold: Cell<Hold>,
    /// Time allowed for the close, set by whoever started it (default `close_timeout`).
    close_within: Cell<Option<Duration>>,
    user: Option<Arc<str>>,
    /// When its token expires (close 4001), and whether that changed since the task looked.
    expires: Cell<Option<Instant>>,
    expiry_changed: Cell<bool>,
    /// Its outbox's bytes as queue groups see them, once it has joined one.
    load: OnceCell<Arc<Load>>,
    /// When it last asked to refresh its token.
    refreshed: Cell<Option<Instant>>,
    /// The oldest queued message's [`Published::born_us`] since the last write (0: none).
    oldest_born: Cell<u64>,
    /// The close it sent or is sending: code (1005 for an empty close frame) and why.
    closed_as: Cell<Option<(u16, CloseReason)>>,
    api: bool,
}

impl Conn {
    pub fn new(id: ConnId, lz4: bool, outbox_max_bytes: usize, identity: &Identity) -> Self {
        Conn {
            id,
            lz4,
            outbox: RefCell::new(Outbox::new(outbox_max_bytes)),
            wake: LocalNotify::default(),
            phase: Cell::new(Phase::Open),
            urgent: Cell::new(false),
            hold: Cell::default(),
            close_within: Cell::new(None),
            user: identity.user.clone(),
            expires: Cell::new(identity.expires_at.map(instant_of)),
            expiry_changed: Cell::new(false),
            load: OnceCell::new(),
            refreshed: Cell::new(None),
            oldest_born: Cell::new(0),
            closed_as: Cell::new(None),
            api: identity.api,
        }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The user its token named; `None` when anonymous.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// Its load, as queue groups see it (kept up to date from the first call on).
    pub fn load(&self) -> &Arc<Load> {
        self.load.get_or_init(|| {
            let load = Arc::new(Load::default());
            load.set_queued(self.outbox.borrow().queued_bytes());
            load
        })
    }

    /// Tells queue groups how much its outbox holds, when it is in one.
    fn report_load(&self, queued_bytes: usize) {
        if let Some(load) = self.load.get() {
            load.set_queued(queued_bytes);
        }
    }

    /// Whether a refresh may be checked now: not within `interval` of the last one.
    pub fn may_refresh(&self, interval: Duration) -> bool {
        let now = Instant::now();
        if self.refreshed.get().is_some_and(|at| now < at + interval) {
            return false;
        }
        self.refreshed.set(Some(now));
        true
    }

    /// A refreshed token expires at `unix_s` (Unix seconds).
    pub fn set_expiry(&self, unix_s: u64) {
        self.expires.set(Some(instant_of(unix_s)));
        self.expiry_changed.set(true);
        self.wake.notify();
    }

    pub fn is_open(&self) -> bool {
        self.phase.get() == Phase::Open
    }

    /// Queues `frame` in `lane` to be written at once; ignored once closing. A full outbox
    /// closes the connection with 1008 "slow consumer".
    pub fn send(&self, lane: Priority, frame: Bytes) {
        self.queue(lane, frame, true);
    }

    /// Queues a published message, in the lane of its priority. Unless it is critical or
    /// urgent, it may wait up to `connection.write_coalesce_us` to share a write with the
    /// messages after it. False when it was dropped (a low-lane message over the lane's share).
    pub fn deliver(&self, message: &Published) -> bool {
        self.born(message.born_us);
        self.queue(
            message.priority,
            message.frame_for(self.lz4).clone(),
            message.priority == Priority::Critical || message.urgent,
        )
    }

    /// Queues a channel batch's frames in `lane` (see [`wsedge_core::broker`]), the first
    /// message born at `born_us`; they go out with the round they waited for, so the connection
    /// is released at once. False when dropped.
    pub fn deliver_batch(&self, lane: Priority, frames: Bytes, born_us: u64) -> bool {
        self.born(born_us);
        let queued = self.queue(lane, frames, false);
        self.release();
        queued
    }

    fn born(&self, born_us: u64) {
        if self.oldest_born.get() == 0 {
            self.oldest_born.set(born_us);
        }
    }

    /// The oldest message's birth (µs) since the last call, for the write that carries it.
    pub fn take_oldest_born(&self) -> u64 {
        self.oldest_born.replace(0)
    }

    /// Whether it is the server API's own connection.
    pub fn is_api(&self) -> bool {
        self.api
    }

    /// Takes every frame queued, in order (an API connection reads its answers so).
    pub fn take_queued(&self) -> Vec<u8> {
        let mut outbox = self.outbox.borrow_mut();
        let mut taken = Vec::with_capacity(outbox.queued_bytes());
        while !outbox.is_empty() {
            let offered = {
                let mut slices = [std::io::IoSlice::new(&[]); 64];
                let (count, offered) = outbox.gather(usize::MAX, &mut slices);
                slices[..count]
                    .iter()
                    .for_each(|s| taken.extend_from_slice(s));
                offered
            };
            outbox.consume(offered);
        }
        taken
    }

    /// Waits until something is queued (after [`Conn::take_queued`] emptied the outbox).
    pub async fn queued(&self) {
        self.wake.notified().await;
    }

    /// Bytes queued in its outbox.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.borrow().queued_bytes()
    }

    /// The close it sent or is sending, once closing.
    pub fn closed_as(&self) -> Option<(u16, CloseReason)> {
        self.closed_as.get()
    }

    /// Queues `frame`; false when it was dropped (or the connection is closing).
    fn queue(&self, lane: Priority, frame: Bytes, urgent: bool) -> bool {
        if !self.is_open() {
            return false;
        }
        let mut outbox = self.outbox.borrow_mut();
        // Wake the task when it may be waiting: on an empty outbox, or holding deliveries back.
        let wake = outbox.is_empty() || (urgent && !self.urgent.get());
        self.urgent.set(self.urgent.get() || urgent);
        let pushed = outbox.push(lane, frame);
        self.report_load(outbox.queued_bytes());
        match pushed {
            Push::Overflow => {
                let queued = outbox.queued_bytes();
                drop(outbox);
                tracing::debug!(conn = %self.id, queued, "outbox full: closing slow consumer");
                let status = Some((1008, "slow consumer"));
                self.close(status, CloseReason::SlowConsumer, CloseKind::Discard, None);
                return false;
            }
            Push::Queued | Push::DroppedLow if wake => self.wake.notify(),
            Push::Queued | Push::DroppedLow => {}
        }
        pushed == Push::Queued
    }

    /// Lets a connection held back for coalescing write (the shard's coalescer calls it).
    pub fn release(&self) {
        self.hold.set(Hold::Released);
        self.wake.notify();
    }

    /// Starts closing with `code`/`reason` (`None`: an empty close frame), counted as `why`.
    /// No-op unless open.
    pub fn close(
        &self,
        status: Option<(u16, &str)>,
        why: CloseReason,
        kind: CloseKind,
        within: Option<Duration>,
    ) {
        if !self.is_open() {
            return;
        }
        self.closed_as
            .set(Some((status.map_or(1005, |(code, _)| code), why)));
        let frame = match status {
            Some((code, reason)) => frame::close(code, reason),
            None => frame::encode(OpCode::Close, &[]),
        };
        self.outbox
            .borrow_mut()
            .push_final(frame, kind == CloseKind::Discard);
        self.urgent.set(true);
        self.phase.set(Phase::Closing {
            await_peer: kind == CloseKind::Graceful,
        });
        self.close_within.set(within);
        self.wake.notify();
    }
}
