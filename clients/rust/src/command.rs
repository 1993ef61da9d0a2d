//! What the application asks of the connection task, and what waits for the server's answer.

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::message::Message;
use crate::options::SubscribeOptions;

/// What the application asks of the connection.
pub(crate) enum Command {
    /// A request answered by `ok` (or its own op) or `error`; kept and resent after a
    /// reconnect until answered.
    Request {
        frame: Map<String, Value>,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    Subscribe {
        channel: String,
        options: SubscribeOptions,
        messages: mpsc::UnboundedSender<Message>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Unsubscribe {
        channel: String,
        group: Option<String>,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    /// Where direct messages go from now on.
    Direct(mpsc::UnboundedSender<Message>),
    /// A fresh token from `get_token`, to send with `refresh` (and use on reconnects).
    Refresh(String),
    Close,
}

/// What waits for an answer, by its `ref`.
pub(crate) enum Reply {
    Request(oneshot::Sender<Result<Value, Error>>),
    /// A subscribe (not resent: the subscription itself is, after a reconnect).
    Subscribe {
        key: String,
        asked_since: bool,
    },
    /// Answered errors become `Event::Error`.
    Ignore,
}

pub(crate) struct Pending {
    /// The frame to resend after a reconnect (`None`: not resent).
    pub(crate) text: Option<String>,
    pub(crate) reply: Reply,
}

/// A string field of a frame (empty when absent).
pub(crate) fn str_of(frame: &Map<String, Value>, key: &str) -> String {
    frame
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The server's error frame as an [`Error`].
pub(crate) fn server_error(frame: &Map<String, Value>) -> Error {
    Error::Server {
        code: str_of(frame, "code"),
        message: str_of(frame, "message"),
    }
}
