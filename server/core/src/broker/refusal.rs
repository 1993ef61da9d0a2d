//! Why the broker refuses a request: the connection stays open and is answered with an error.

use crate::protocol::envelope::ErrorCode;

/// A request the broker refuses; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a connection may subscribe to at most {0} channels")]
    TooManySubscriptions(usize),
    #[error("already subscribed to {0:?} otherwise (with or without ack); unsubscribe first")]
    Subscribed(Box<str>),
    #[error("this shard keeps {0} durable groups, its share of groups.max_durable; join an existing one")]
    TooManyDurableGroups(usize),
    #[error("{0} is not a durable group")]
    NotDurable(Box<str>),
    #[error("{0} takes no messages now: it has no member and is not durable")]
    NoQueue(Box<str>),
    #[error("not subscribed to {0:?}")]
    NotSubscribed(Box<str>),
    #[error("not allowed to {0}")]
    Forbidden(String),
    #[error("{0}")]
    InboxFull(String),
    #[error("no message {0:?} awaits this connection's ack")]
    UnknownMessage(Box<str>),
    #[error("the store could not write the message; nothing was delivered, retry later")]
    StoreFailed,
    #[error("not carried out: shard {0}'s inbound queue is full; retry later")]
    Overloaded(usize),
}

impl Refusal {
    /// The error code the client is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            Refusal::NotSubscribed(_) => ErrorCode::NotSubscribed,
            Refusal::Subscribed(_) => ErrorCode::InvalidField,
            Refusal::NoQueue(_) | Refusal::NotDurable(_) => ErrorCode::NotSubscribed,
            Refusal::TooManyDurableGroups(_) => ErrorCode::TooManySubscriptions,
            Refusal::Forbidden(_) => ErrorCode::Forbidden,
            Refusal::InboxFull(_) => ErrorCode::InboxFull,
            Refusal::UnknownMessage(_) => ErrorCode::UnknownMessage,
            Refusal::StoreFailed => ErrorCode::StoreUnavailable,
            Refusal::Overloaded(_) => ErrorCode::Overloaded,
        }
    }
}
