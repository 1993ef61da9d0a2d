//! An async (tokio) client for wsedge, with the browser client's semantics and a consumer API
//! for agents:
//!
//! ```no_run
//! # async fn run() -> Result<(), wsedge_client::Error> {
//! use std::time::Duration;
//! use wsedge_client::{Client, Group, Options, PublishOptions};
//!
//! let client = Client::connect("ws://127.0.0.1:8080/ws", Options::default())?;
//! let mut tasks = client.subscribe("tasks", Group("workers").ack()).await?;
//! while let Some(task) = tasks.next().await {
//!     match task.data["kind"].as_str() {
//!         Some("later") => task.nak(Duration::from_secs(5)).await?,
//!         Some(_) => {
//!             client.publish("results", task.data.clone(), PublishOptions::default()).await?;
//!             task.ack().await?;
//!         }
//!         None => task.term("no kind").await?,
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! - **Reconnects** with full-jitter backoff (0.5 s doubling to 20 s), and a watchdog: it pings
//!   every `heartbeat` and reconnects when nothing arrived for `heartbeat + grace`.
//! - **Tokens**: `token`, or `get_token` before each connect and before `exp` (the `refresh`
//!   op).
//! - **Resubscribes** after a reconnect, with `since` on channels with history, so missed
//!   messages are replayed; [`Event::Recovery`] says when they could not be.
//! - **Publishes and sends** carry a `msg_id` (generated unless given) and are kept until their
//!   `ok`: made while disconnected (within `buffer_max`, `buffer_max_bytes`) or lost with a
//!   connection, they are resent after the reconnect, and the server's dedup turns a repeat
//!   into `duplicate`.
//! - **Acks**: a message with `needs_ack` is settled with `ack`, `nak(delay)` or `term(reason)`.
//! - **Memory is bounded**: past `max_queued_bytes` of messages the application has not taken,
//!   the connection is dropped and resumed later from where the application got to.

mod command;
mod driver;
mod error;
mod lz4;
mod message;
mod options;
mod pattern;
mod sub;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use command::Command;
use driver::Driver;
pub use error::Error;
pub use message::{Event, Message, Subscription};
pub use options::{GetToken, Group, Options, PublishOptions, SubscribeOptions};
pub use pattern::matches;

/// A connection that keeps itself connected; cheap to clone. It runs on the tokio runtime it
/// was created on, and ends when [`Client::close`] is called or every clone is dropped.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Event>,
    connected: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    ids: Arc<(String, AtomicU64)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts connecting to `url` (`ws://host:port/ws`); returns at once. Requests made before
    /// the connection is up wait for it (publishes, sends and reads are buffered).
    pub fn connect(url: &str, options: Options) -> Result<Client, Error> {
        if !url.starts_with("ws://") && !url.starts_with("wss://") {
            return Err(Error::Invalid(format!("not a ws:// or wss:// URL: {url}")));
        }
        let (commands, receiver) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let connected = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let driver = Driver::new(
            url.to_string(),
            options,
            receiver,
            commands.downgrade(),
            events.clone(),
            connected.clone(),
            queued.clone(),
        );
        tokio::spawn(driver.run());
        let prefix = format!(
            "{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()) << 40
        );
        Ok(Client {
            commands,
            events,
            connected,
            queued,
            ids: Arc::new((prefix, AtomicU64::new(0))),
        })
    }

    /// Whether the server has welcomed the current connection.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connection and subscription events from now on (a bounded channel: a receiver that
    /// falls 1,024 events behind skips the oldest).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Subscribes to `channel` (a name or a pattern); returns once the server confirmed it
    /// (the first time: it waits for a connection).
    pub async fn subscribe(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let (messages, receiver) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        self.command(Command::Subscribe {
            channel: channel.into(),
            options,
            messages,
            reply,
        })?;
        answer.await.map_err(|_| Error::Closed)??;
        Ok(Subscription {
            channel: channel.into(),
            messages: receiver,
            queued: self.queued.clone(),
        })
    }

    /// Ends the subscription to `channel` (in `group`, when it is a group's).
    pub async fn unsubscribe(&self, channel: &str, group: Option<&str>) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Unsubscribe {
            channel: channel.into(),
            group: group.map(Into::into),
            reply,
        })?;
        answer.await.map_err(|_| Error::Closed)?.map(|_| ())
    }

    /// Direct messages to this connection's user from now on.
    pub fn direct_messages(&self) -> Subscription {
        let (messages, receiver) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Direct(messages));
        Subscription {
            channel: String::new(),
            messages: receiver,
            queued: self.queued.clone(),
        }
    }

    /// Publishes `data` to `channel`; the server's `ok` (with `duplicate` or `scheduled` when
    /// they apply).
    pub async fn publish(
        &self,
        channel: &str,
        data: Value,
        options: PublishOptions,
    ) -> Result<Value, Error> {
        self.deliver(("publish", "channel", channel), data, options)
            .await
    }

    /// Sends `data` to `user`'s connections (`ack`/`persist` in the options for an inbox).
    pub async fn send(
        &self,
        user: &str,
        data: Value,
        options: PublishOptions,
    ) -> Result<Value, Error> {
        self.deliver(("send", "user", user), data, options).await
    }

    /// A publish or send: `op`, its destination field and value, `data`, the options, and a
    /// generated `msg_id` unless one is given.
    async fn deliver(
        &self,
        (op, field, to): (&str, &str, &str),
        data: Value,
        options: PublishOptions,
    ) -> Result<Value, Error> {
        let mut frame = Map::new();
        frame.insert("op".into(), op.into());
        frame.insert(field.into(), to.into());
        frame.insert("data".into(), data);
        options.apply(&mut frame, self.next_msg_id());
        self.request(frame).await
    }

    /// Who is subscribed to `channel`: `{"connections":N,"users":[...]}`.
    pub async fn presence(&self, channel: &str) -> Result<Value, Error> {
        let mut frame = Map::new();
        frame.insert("op".into(), "presence".into());
        frame.insert("channel".into(), channel.into());
        self.request(frame).await
    }

    /// The channel's kept messages (the last `limit`).
    pub async fn history(&self, channel: &str, limit: Option<u32>) -> Result<Value, Error> {
        let mut frame = Map::new();
        frame.insert("op".into(), "history".into());
        frame.insert("channel".into(), channel.into());
        if let Some(limit) = limit {
            frame.insert("limit".into(), limit.into());
        }
        self.request(frame).await
    }

    /// Any request (an object with `op`), buffered like a publish; its answer.
    pub async fn request(&self, frame: Map<String, Value>) -> Result<Value, Error> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Request { frame, reply })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Closes the connection for good; pending requests fail with [`Error::Closed`].
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    fn command(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).map_err(|_| Error::Closed)
    }

    fn next_msg_id(&self) -> String {
        format!(
            "{}-{}",
            self.ids.0,
            self.ids.1.fetch_add(1, Ordering::Relaxed) + 1
        )
    }
}
