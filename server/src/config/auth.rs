//! `[auth]`: who may connect, how their tokens are checked, and what connections may subscribe
//! and publish to (applied by [`wsedge_core::auth`] and the broker).
//!
//! The issue's `[auth.anonymous] subscribe/publish` cannot sit beside the `anonymous` switch in
//! TOML (a key cannot be both a boolean and a table), so they are `anonymous_subscribe` and
//! `anonymous_publish`.

use std::sync::Arc;

use serde::Deserialize;
use wsedge_core::auth::{Key, Permissions, Verifier};
use wsedge_core::topic;

use super::error::{invalid, ConfigError};

/// Default `auth.anonymous`: connections without a token are accepted (as no user).
pub const DEFAULT_ANONYMOUS: bool = true;
/// Shortest `auth.hs256_secret` accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    pub anonymous: bool,
    pub hs256_secret: String,
    pub hs256_secret_file: String,
    pub public_key_file: String,
    pub issuer: String,
    pub audience: String,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
    pub anonymous_subscribe: Vec<String>,
    pub anonymous_publish: Vec<String>,
}

impl Default for AuthSection {
    fn default() -> Self {
        let everything = || vec![">".to_string()];
        AuthSection {
            anonymous: DEFAULT_ANONYMOUS,
            hs256_secret: String::new(),
            hs256_secret_file: String::new(),
            public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            subscribe: everything(),
            publish: everything(),
            anonymous_subscribe: everything(),
            anonymous_publish: everything(),
        }
    }
}

/// The validated `[auth]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// Connections without a token are accepted.
    pub anonymous: bool,
    /// The token key; `None`: tokens cannot be checked, so none is accepted.
    pub key: Option<Key>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// What a token without a `wsedge` claim allows.
    pub permissions: Arc<Permissions>,
    /// What an anonymous connection may do.
    pub anonymous_permissions: Arc<Permissions>,
}

impl Auth {
    /// The token checker, when a key is configured.
    pub fn verifier(&self) -> Option<Verifier> {
        let key = self.key.clone()?;
        let verifier = Verifier::new(key, self.issuer.as_deref(), self.audience.as_deref());
        // The key was checked by `validate`.
        verifier.ok()
    }
}

impl AuthSection {
    pub(super) fn validate(self) -> Result<Auth, ConfigError> {
        let read = |key: &'static str, path: &str| {
            std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))
        };
        let sources = [
            !self.hs256_secret.is_empty(),
            !self.hs256_secret_file.is_empty(),
            !self.public_key_file.is_empty(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            return Err(invalid(
                "auth.hs256_secret",
                "set one of auth.hs256_secret, auth.hs256_secret_file, auth.public_key_file".into(),
            ));
        }
        let key = if !self.hs256_secret.is_empty() {
            Some(hs256("auth.hs256_secret", self.hs256_secret.into_bytes())?)
        } else if !self.hs256_secret_file.is_empty() {
            let mut secret = read("auth.hs256_secret_file", &self.hs256_secret_file)?;
            while secret.last().is_some_and(u8::is_ascii_whitespace) {
                secret.pop();
            }
            Some(hs256("auth.hs256_secret_file", secret)?)
        } else if !self.public_key_file.is_empty() {
            let pem = read("auth.public_key_file", &self.public_key_file)?;
            Verifier::new(Key::PublicPem(pem.clone()), None, None)
                .map_err(|e| invalid("auth.public_key_file", e.to_string()))?;
            Some(Key::PublicPem(pem))
        } else {
            None
        };
        if !self.anonymous && key.is_none() {
            return Err(invalid(
                "auth.anonymous",
                "is false, but no key is set to check tokens (auth.hs256_secret, auth.hs256_secret_file or auth.public_key_file)".into(),
            ));
        }
        let optional = |s: String| (!s.is_empty()).then_some(s);
        Ok(Auth {
            anonymous: self.anonymous,
            key,
            issuer: optional(self.issuer),
            audience: optional(self.audience),
            permissions: Arc::new(Permissions::new(
                patterns("auth.subscribe", self.subscribe)?,
                patterns("auth.publish", self.publish)?,
            )),
            anonymous_permissions: Arc::new(Permissions::new(
                patterns("auth.anonymous_subscribe", self.anonymous_subscribe)?,
                patterns("auth.anonymous_publish", self.anonymous_publish)?,
            )),
        })
    }
}

fn hs256(key: &'static str, secret: Vec<u8>) -> Result<Key, ConfigError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(invalid(
            key,
            format!(
                "the secret is {} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES}",
                secret.len()
            ),
        ));
    }
    Ok(Key::Hs256(secret))
}

fn patterns(key: &'static str, list: Vec<String>) -> Result<Vec<Box<str>>, ConfigError> {
    list.into_iter()
        .map(|p| match topic::check_pattern(&p) {
            Ok(()) => Ok(p.into_boxed_str()),
            Err(why) => Err(invalid(key, format!("{p:?} {why}"))),
        })
        .collect()
}
