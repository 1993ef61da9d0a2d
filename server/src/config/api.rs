//! `[api]`: the HTTP server API under `/api/`, its keys, and fault injection for tests.

use serde::Deserialize;

use super::error::{invalid, ConfigError};

/// Shortest API key accepted, in bytes.
pub const MIN_API_KEY_LEN: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Keys a request may present as `Authorization: Bearer <key>`; none: every request is
    /// answered 401.
    pub keys: Vec<String>,
    /// Serves `POST /api/debug/stall`, which blocks a shard's or the store's thread for a
    /// while (to see `/health` go red). Off by default: never on in production.
    pub fault_injection: bool,
}

/// `[api]` validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiConfig {
    pub keys: Vec<String>,
    pub fault_injection: bool,
}

impl ApiSection {
    pub(super) fn validate(&self) -> Result<ApiConfig, ConfigError> {
        if let Some(short) = self.keys.iter().find(|k| k.len() < MIN_API_KEY_LEN) {
            return Err(invalid(
                "api.keys",
                format!(
                    "a key of {} bytes is shorter than {MIN_API_KEY_LEN}",
                    short.len()
                ),
            ));
        }
        Ok(ApiConfig {
            keys: self.keys.clone(),
            fault_injection: self.fault_injection,
        })
    }
}
