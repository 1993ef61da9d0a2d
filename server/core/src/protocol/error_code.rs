//! The machine-readable codes of `{"op":"error"}` answers (listed in `server/PROTOCOL.md`).

/// Machine-readable error codes sent in `{"op":"error","code":...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    NotAnObject,
    UnknownOp,
    MissingField,
    InvalidField,
    BadChannel,
    BinaryNotSupported,
    TooManySubscriptions,
    NotSubscribed,
    Overloaded,
    RateLimited,
    Forbidden,
    InvalidToken,
    InboxFull,
    UnknownMessage,
    StoreUnavailable,
    HistoryOff,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` indexes it).
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidJson,
        ErrorCode::NotAnObject,
        ErrorCode::UnknownOp,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::BadChannel,
        ErrorCode::BinaryNotSupported,
        ErrorCode::TooManySubscriptions,
        ErrorCode::NotSubscribed,
        ErrorCode::Overloaded,
        ErrorCode::RateLimited,
        ErrorCode::Forbidden,
        ErrorCode::InvalidToken,
        ErrorCode::InboxFull,
        ErrorCode::UnknownMessage,
        ErrorCode::StoreUnavailable,
        ErrorCode::HistoryOff,
    ];

    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::NotAnObject => "not_an_object",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::BadChannel => "bad_channel",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InboxFull => "inbox_full",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::HistoryOff => "history_off",
        }
    }
}
