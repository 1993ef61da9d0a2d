//! `[api]`: the HTTP server API under `/api/` (today the dead-letter queue).

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
}

impl ApiSection {
    pub(super) fn validate(&self) -> Result<Vec<String>, ConfigError> {
        if let Some(short) = self.keys.iter().find(|k| k.len() < MIN_API_KEY_LEN) {
            return Err(invalid(
                "api.keys",
                format!(
                    "a key of {} bytes is shorter than {MIN_API_KEY_LEN}",
                    short.len()
                ),
            ));
        }
        Ok(self.keys.clone())
    }
}
