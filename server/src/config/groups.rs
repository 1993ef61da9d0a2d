//! `[groups]` (queue groups) and `[presence]`: defaults of the ops that say who gets what.

use serde::Deserialize;
use wsedge_core::protocol::Balance;

use super::error::{invalid, positive, ConfigError};

/// Default `groups.balance`: how a group picks a member when a subscribe names no `balance`.
pub const DEFAULT_BALANCE: &str = "least_loaded";
/// Default `groups.max_durable`: durable groups the server keeps at most (each lives until
/// the store is emptied, so a client must not make them without bound).
pub const DEFAULT_MAX_DURABLE: usize = 1000;
/// Default `presence.max_users`: distinct users a `presence` answer lists at most.
pub const DEFAULT_PRESENCE_MAX_USERS: usize = 1000;
/// Largest `presence.max_users` accepted (an answer is one frame; 10,000 ids of 256 bytes fit in
/// the default outbox).
pub const MAX_PRESENCE_MAX_USERS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsSection {
    pub balance: String,
    pub max_durable: usize,
}

impl Default for GroupsSection {
    fn default() -> Self {
        GroupsSection {
            balance: DEFAULT_BALANCE.into(),
            max_durable: DEFAULT_MAX_DURABLE,
        }
    }
}

impl GroupsSection {
    /// The default balance, and the most durable groups.
    pub(super) fn validate(&self) -> Result<(Balance, usize), ConfigError> {
        let balance = Balance::parse(&self.balance).ok_or_else(|| {
            invalid(
                "groups.balance",
                format!(
                    "{:?} is not \"least_loaded\" or \"round_robin\"",
                    self.balance
                ),
            )
        })?;
        let max_durable = positive("groups.max_durable", self.max_durable as u64)? as usize;
        Ok((balance, max_durable))
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSection {
    pub max_users: usize,
}

impl Default for PresenceSection {
    fn default() -> Self {
        PresenceSection {
            max_users: DEFAULT_PRESENCE_MAX_USERS,
        }
    }
}

impl PresenceSection {
    pub(super) fn validate(&self) -> Result<usize, ConfigError> {
        let n = positive("presence.max_users", self.max_users as u64)? as usize;
        if n > MAX_PRESENCE_MAX_USERS {
            return Err(invalid(
                "presence.max_users",
                format!("{n} is more than {MAX_PRESENCE_MAX_USERS}"),
            ));
        }
        Ok(n)
    }
}
