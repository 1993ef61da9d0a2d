//! Options: the connection's ([`Options`]), a subscription's ([`SubscribeOptions`]) and a
//! publish's or send's ([`PublishOptions`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Returns a fresh token (a JWT), before each connect and before the token expires.
pub type GetToken =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// How the client connects and keeps connected. The defaults are the browser client's.
#[derive(Clone)]
pub struct Options {
    /// A JWT sent as `Authorization: Bearer`; or `get_token`.
    pub token: Option<String>,
    /// Called before every connect and `refresh_before` ahead of the token's `exp`.
    pub get_token: Option<GetToken>,
    /// First reconnect delay bound (default 500 ms); delays are uniform between it and
    /// `min(max_delay, min_delay * 2^attempt)` (full jitter).
    pub min_delay: Duration,
    /// Largest reconnect delay bound (default 20 s).
    pub max_delay: Duration,
    /// How often the client pings (default 10 s).
    pub heartbeat: Duration,
    /// Reconnect when nothing was heard for `heartbeat + grace` (default 5 s).
    pub grace: Duration,
    /// How long before `exp` a refreshed token is sent (default 30 s).
    pub refresh_before: Duration,
    /// Publishes, sends and reads awaiting their answer, at most (default 1,000).
    pub buffer_max: usize,
    /// ...and at most these bytes of them (default 1 MiB).
    pub buffer_max_bytes: usize,
    /// Bytes of messages delivered and not yet taken by the application, over all
    /// subscriptions, past which the connection is dropped and later resumed from where the
    /// application got to (default 16 MiB).
    pub max_queued_bytes: usize,
    /// Ask for `wsedge.v1.lz4` (default false).
    pub lz4: bool,
    /// Largest message read from the server, as sent and (lz4) decompressed (default 16 MiB).
    /// A larger one closes the connection (1009), which is then retried: a server configured
    /// with a larger `connection.max_message_size` needs this raised.
    pub max_message_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            get_token: None,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            heartbeat: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            refresh_before: Duration::from_secs(30),
            buffer_max: 1000,
            buffer_max_bytes: 1 << 20,
            max_queued_bytes: 16 << 20,
            lz4: false,
            max_message_size: 16 << 20,
        }
    }
}

impl Options {
    /// The WebSocket limits: messages and frames up to `max_message_size`.
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig {
            max_message_size: Some(self.max_message_size),
            max_frame_size: Some(self.max_message_size),
            ..WebSocketConfig::default()
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("get_token", &self.get_token.is_some())
            .field("min_delay", &self.min_delay)
            .field("max_delay", &self.max_delay)
            .field("heartbeat", &self.heartbeat)
            .field("grace", &self.grace)
            .field("buffer_max", &self.buffer_max)
            .field("lz4", &self.lz4)
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

/// A subscription's options: `SubscribeOptions::default()` is a plain one;
/// `Group("workers").ack()` a work queue.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    pub(crate) group: Option<String>,
    pub(crate) balance: Option<String>,
    pub(crate) ack: bool,
    pub(crate) durable: bool,
    pub(crate) presence: bool,
    pub(crate) since: Option<(String, u64)>,
    pub(crate) no_recover: bool,
}

/// A queue group: each message goes to one member. `Group("workers").ack()`.
#[allow(non_snake_case)]
pub fn Group(name: &str) -> SubscribeOptions {
    SubscribeOptions::default().group(name)
}

impl SubscribeOptions {
    /// Joins queue group `name`.
    pub fn group(mut self, name: &str) -> Self {
        self.group = Some(name.into());
        self
    }
    /// `"least_loaded"` or `"round_robin"` (with a group).
    pub fn balance(mut self, how: &str) -> Self {
        self.balance = Some(how.into());
        self
    }
    /// Each message waits for `ack` (or `nak`, `term`) and is redelivered until then.
    pub fn ack(mut self) -> Self {
        self.ack = true;
        self
    }
    /// The group keeps its messages on disk (with `ack` and a group).
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }
    /// Receive `join` and `leave` events too.
    pub fn presence(mut self) -> Self {
        self.presence = true;
        self
    }
    /// Start after this position of the channel's history.
    pub fn since(mut self, epoch: &str, offset: u64) -> Self {
        self.since = Some((epoch.into(), offset));
        self
    }
    /// Do not ask for what was missed when resubscribing after a reconnect.
    pub fn no_recover(mut self) -> Self {
        self.no_recover = true;
        self
    }

    /// The `subscribe` request, resuming after `position` when there is one.
    pub(crate) fn frame(
        &self,
        channel: &str,
        position: Option<&(String, u64)>,
    ) -> Map<String, Value> {
        let mut f = Map::new();
        f.insert("op".into(), "subscribe".into());
        f.insert("channel".into(), channel.into());
        if let Some(g) = &self.group {
            f.insert("group".into(), g.as_str().into());
        }
        if let Some(b) = &self.balance {
            f.insert("balance".into(), b.as_str().into());
        }
        for (key, on) in [
            ("ack", self.ack),
            ("durable", self.durable),
            ("presence", self.presence),
        ] {
            if on {
                f.insert(key.into(), true.into());
            }
        }
        let plain = !self.ack && self.group.is_none();
        if let (true, Some((epoch, offset))) = (plain, position) {
            f.insert("since".into(), json!({"epoch": epoch, "offset": offset}));
        }
        f
    }
}

/// A publish's or send's options.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// `low`, `normal`, `high` or `critical`.
    pub priority: Option<String>,
    /// The dedup id; generated when `None`, so a resend after a reconnect is a duplicate.
    pub msg_id: Option<String>,
    /// Stored (and synced) before the `ok`.
    pub persist: bool,
    /// A send that waits in the recipient's inbox for an ack.
    pub ack: bool,
    /// Deliver at this RFC 3339 time.
    pub deliver_at: Option<String>,
    /// Deliver after this long.
    pub delay: Option<Duration>,
}

impl PublishOptions {
    pub(crate) fn apply(&self, f: &mut Map<String, Value>, msg_id: String) {
        f.insert(
            "msg_id".into(),
            self.msg_id.clone().unwrap_or(msg_id).into(),
        );
        if let Some(p) = &self.priority {
            f.insert("priority".into(), p.as_str().into());
        }
        if self.persist {
            f.insert("persist".into(), true.into());
        }
        if self.ack {
            f.insert("ack".into(), true.into());
        }
        if let Some(at) = &self.deliver_at {
            f.insert("deliver_at".into(), at.as_str().into());
        }
        if let Some(d) = self.delay {
            f.insert("delay_ms".into(), (d.as_millis() as u64).into());
        }
    }
}
