//! Why a configuration cannot be used, naming the key (or the environment variable) at fault.

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("unknown environment override {0}: {1} (see config/wsedge.toml for the keys)")]
    UnknownEnv(String, String),
    #[error("invalid value in environment variable {var}: {message}")]
    InvalidEnv { var: String, message: String },
}

pub(super) fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// `v`, unless it is 0.
pub(super) fn positive(key: &'static str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        return Err(invalid(key, "must be greater than 0".into()));
    }
    Ok(v)
}

pub(super) fn parse_error(origin: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string().trim().to_string(),
    }
}
