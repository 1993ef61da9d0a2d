//! The client's errors.

/// What a request, a subscription or a connection can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server answered with an error frame (`code` as in the protocol's error table).
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    /// More than `buffer_max` requests (or `buffer_max_bytes`) await an answer.
    #[error("buffer full: {0} requests await an answer")]
    BufferFull(usize),
    /// Not connected, for what is not buffered (a settle, a refresh).
    #[error("not connected")]
    Disconnected,
    /// The client was closed.
    #[error("the client was closed")]
    Closed,
    /// A bad URL or option.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The protocol's error code, for a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}
