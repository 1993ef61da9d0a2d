//! What the application receives: [`Message`]s from a [`Subscription`] (or the client's direct
//! inbox), and [`Event`]s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::error::Error;

/// A delivered message. Settle one with `needs_ack` by [`Message::ack`], [`Message::nak`] or
/// [`Message::term`]; unsettled, the server delivers it again after `[ack] wait_ms`.
#[derive(Debug)]
pub struct Message {
    /// The message id (what is acknowledged).
    pub id: String,
    /// The channel it was published to (`None` for a direct message).
    pub channel: Option<String>,
    /// The recipient, for a direct message.
    pub user: Option<String>,
    /// The sender of a direct message (`None` when anonymous or published).
    pub from: Option<String>,
    pub priority: String,
    /// The position in the channel's history, when it has one.
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    /// How many times it may have been delivered before.
    pub redelivered: u64,
    pub needs_ack: bool,
    pub data: Value,
    /// The frame's size, counted against `max_queued_bytes` until taken.
    pub(crate) bytes: usize,
    pub(crate) settles: mpsc::UnboundedSender<Map<String, Value>>,
}

impl Message {
    pub(crate) fn from_frame(
        frame: &Map<String, Value>,
        bytes: usize,
        settles: mpsc::UnboundedSender<Map<String, Value>>,
    ) -> Message {
        let text = |k: &str| frame.get(k).and_then(Value::as_str).map(String::from);
        Message {
            id: text("id").unwrap_or_default(),
            channel: text("channel"),
            user: text("user"),
            from: text("from"),
            priority: text("priority").unwrap_or_else(|| "normal".into()),
            offset: frame.get("offset").and_then(Value::as_u64),
            epoch: text("epoch"),
            redelivered: frame
                .get("redelivered")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            needs_ack: frame.get("ack") == Some(&Value::Bool(true)),
            data: frame.get("data").cloned().unwrap_or(Value::Null),
            bytes,
            settles,
        }
    }

    /// Done: the message leaves the queue or inbox.
    pub async fn ack(&self) -> Result<(), Error> {
        self.settle(json!({"op": "ack", "id": self.id}))
    }

    /// Not now: delivered again after `delay`.
    pub async fn nak(&self, delay: Duration) -> Result<(), Error> {
        self.settle(json!({"op": "nak", "id": self.id, "delay_ms": delay.as_millis() as u64}))
    }

    /// Never: it goes to the dead-letter queue with `reason`.
    pub async fn term(&self, reason: &str) -> Result<(), Error> {
        self.settle(json!({"op": "term", "id": self.id, "reason": reason}))
    }

    /// Hands the settle to the connection, in order with everything else it sends. It does
    /// not wait for the server's answer (which may only come after messages the application
    /// has not taken yet); one refused arrives as [`Event::Error`]. Not connected, it fails
    /// with [`Error::Disconnected`]: the server delivers the message again.
    fn settle(&self, frame: Value) -> Result<(), Error> {
        let Value::Object(frame) = frame else {
            unreachable!("an object literal")
        };
        self.settles.send(frame).map_err(|_| Error::Closed)
    }
}

/// What happened to the connection or a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connecting {
        attempt: u32,
    },
    /// Welcomed: `connection` is the server's id for it.
    Connected {
        connection: String,
    },
    /// Lost, with the close code (0 when there was none) and why; the next attempt is in
    /// `retry_in`.
    Disconnected {
        code: u16,
        reason: String,
        retry_in: Duration,
    },
    /// A resubscribe asked for what was missed: `recovered` says whether all of it came.
    Recovery {
        channel: String,
        recovered: bool,
    },
    /// A `join` or `leave` on a subscription with presence.
    Presence {
        channel: String,
        joined: bool,
        user: Option<String>,
        connection: String,
    },
    /// An error frame no request was waiting for (a refused settle, a rate limit).
    Error(Error),
    Closed,
}

/// A subscription's messages, in order. Dropping it does not unsubscribe; see
/// [`crate::Client::unsubscribe`].
#[derive(Debug)]
pub struct Subscription {
    pub(crate) channel: String,
    pub(crate) messages: mpsc::UnboundedReceiver<Message>,
    pub(crate) queued: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next message; `None` once the subscription or the client has ended.
    pub async fn next(&mut self) -> Option<Message> {
        let message = self.messages.recv().await?;
        self.queued.fetch_sub(message.bytes, Ordering::Relaxed);
        Some(message)
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }
}
