//! Configuration in two stages: [`FileConfig`] is what `config/wsedge.toml` (or the embedded
//! default), `WSEDGE_<SECTION>_<KEY>` environment variables (see `env`) and CLI flags say; [`FileConfig::validate`] turns it
//! into the [`Config`] the server uses, or fails naming the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wsedge_core::broker::{DeliveryConfig, HistoryConfig};
use wsedge_core::protocol::Balance;

/// The shipped configuration file; every key it sets equals the default constant below.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config/wsedge.toml");

/// Default `server.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `server.shards`: 0 means one per available core.
pub const DEFAULT_SHARDS: usize = 0;
/// Default `server.listen_backlog`.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Default `server.max_connections` (WebSocket connections, all shards together): 0 means as
/// many as the open-file limit allows, less [`FD_RESERVE`] (see [`Config::socket_budget`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 0;
/// Descriptors kept free of client sockets: listeners, the runtime's own, logs, a store later,
/// and room to accept a connection only to answer it 503.
pub const FD_RESERVE: usize = 64;
/// Default `server.max_request_bytes`: the largest HTTP request head (request line and headers);
/// larger gets 431. hyper's minimum is 8192.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 << 10;
/// Default `server.handshake_budget_bytes`: what all connections still in the HTTP phase may
/// hold together, as `max_request_bytes` each; a connection past it is answered 503 at once.
pub const DEFAULT_HANDSHAKE_BUDGET_BYTES: usize = 64 << 20;
/// Default `server.handshake_timeout_ms`: time for a new TCP connection to finish its HTTP request.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default `server.shutdown_grace_ms`: how long shutdown waits for outboxes to drain.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Default `server.shard_queue_capacity`: messages waiting in one shard's inbound queue.
pub const DEFAULT_SHARD_QUEUE_CAPACITY: usize = 65_536;
/// Default `server.shard_queue_max_bytes`: frame bytes waiting in one shard's inbound queue.
pub const DEFAULT_SHARD_QUEUE_MAX_BYTES: usize = 64 << 20;
/// Default `server.echo_endpoint`: serve `GET /echo` (raw echo, for conformance tests).
pub const DEFAULT_ECHO_ENDPOINT: bool = true;
/// Default `connection.max_message_size`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Default `connection.outbox_max_bytes`: 4 MiB per connection.
pub const DEFAULT_OUTBOX_MAX_BYTES: usize = 4 << 20;
/// Default `connection.write_batch_bytes`: bytes gathered into one vectored write.
pub const DEFAULT_WRITE_BATCH_BYTES: usize = 64 << 10;
/// Default `connection.write_coalesce_us`: deliveries to one connection are written at most
/// once per this interval, and a busy shard reads its sockets and releases its channel batches
/// once per interval too (0: each delivery as soon as it is queued; see `shard::coalesce` and
/// `shard::batch`).
pub const DEFAULT_WRITE_COALESCE_US: u64 = 3_000;
/// Largest `connection.write_coalesce_us` accepted.
pub const MAX_WRITE_COALESCE_US: u64 = 10_000_000;
/// Default `connection.ping_interval_ms`.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 25_000;
/// Default `connection.idle_timeout_ms`: close when nothing was heard for this long.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default `connection.close_timeout_ms`: wait for the peer's close frame, or for a close frame
/// to be written, at most this long.
pub const DEFAULT_CLOSE_TIMEOUT_MS: u64 = 5_000;
/// Default `connection.max_subscriptions` per connection.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;
/// Default `connection.max_fragments`: frames one message may arrive in (1 MiB in Autobahn's
/// smallest, 64-byte fragments); more: close 1008.
pub const DEFAULT_MAX_FRAGMENTS: usize = 16_384;
/// Default `protocol.lz4_threshold`: smallest message payload sent lz4-compressed.
pub const DEFAULT_LZ4_THRESHOLD: usize = 1024;
/// Default `protocol.max_json_depth`: nesting of arrays and objects in a request.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 128;
/// Largest `protocol.max_json_depth` accepted (values are built recursively on a shard's stack).
pub const MAX_JSON_DEPTH: usize = 1024;

/// The file form: every section and key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    pub connection: ConnectionSection,
    pub protocol: ProtocolSection,
    pub limits: LimitsSection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub groups: GroupsSection,
    pub presence: PresenceSection,
    pub store: StoreSection,
    pub ack: AckSection,
    pub inbox: InboxSection,
    pub dedup: DedupSection,
    pub api: ApiSection,
    pub history: HistorySection,
    pub alerting: AlertingSection,
    /// `[[alerts]]`: rules added to (or replacing by name) the shipped ones.
    pub alerts: Vec<RuleSection>,
    pub log: LogSection,
    /// Keys set by environment variables, so that their errors name the variable.
    #[serde(skip)]
    overrides: env::Overrides,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub shards: usize,
    pub listen_backlog: u32,
    pub max_connections: usize,
    pub handshake_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    pub shard_queue_capacity: usize,
    pub shard_queue_max_bytes: usize,
    pub max_request_bytes: usize,
    pub handshake_budget_bytes: usize,
    pub echo_endpoint: bool,
    pub allowed_origins: Vec<String>,
    pub max_connections_per_ip: u32,
    pub new_connections_per_ip_per_s: u32,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: DEFAULT_LISTEN.into(),
            shards: DEFAULT_SHARDS,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            shard_queue_capacity: DEFAULT_SHARD_QUEUE_CAPACITY,
            shard_queue_max_bytes: DEFAULT_SHARD_QUEUE_MAX_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            handshake_budget_bytes: DEFAULT_HANDSHAKE_BUDGET_BYTES,
            echo_endpoint: DEFAULT_ECHO_ENDPOINT,
            allowed_origins: Vec::new(),
            max_connections_per_ip: 0,
            new_connections_per_ip_per_s: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSection {
    pub max_message_size: usize,
    pub outbox_max_bytes: usize,
    pub write_batch_bytes: usize,
    pub write_coalesce_us: u64,
    pub ping_interval_ms: u64,
    pub idle_timeout_ms: u64,
    pub close_timeout_ms: u64,
    pub max_subscriptions: usize,
    pub max_fragments: usize,
}

impl Default for ConnectionSection {
    fn default() -> Self {
        ConnectionSection {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            outbox_max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            write_batch_bytes: DEFAULT_WRITE_BATCH_BYTES,
            write_coalesce_us: DEFAULT_WRITE_COALESCE_US,
            ping_interval_ms: DEFAULT_PING_INTERVAL_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            close_timeout_ms: DEFAULT_CLOSE_TIMEOUT_MS,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_fragments: DEFAULT_MAX_FRAGMENTS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolSection {
    pub lz4_threshold: usize,
    pub max_json_depth: usize,
}

impl Default for ProtocolSection {
    fn default() -> Self {
        ProtocolSection {
            lz4_threshold: DEFAULT_LZ4_THRESHOLD,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
        }
    }
}

/// `[tls]`: both files, or neither (plain TCP).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    pub cert_file: String,
    pub key_file: String,
}

/// The certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Resolved: never 0.
    pub shards: usize,
    pub listen_backlog: u32,
    /// As configured: 0 means "what the open-file limit allows" (see [`Config::socket_budget`]).
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub shard_queue_capacity: usize,
    pub shard_queue_max_bytes: usize,
    pub max_request_bytes: usize,
    /// Connections allowed in the HTTP phase at once: `handshake_budget_bytes / max_request_bytes`.
    pub max_pending_handshakes: usize,
    pub echo_endpoint: bool,
    /// Lowercase `scheme://host[:port]` origins a browser may connect from; empty: any.
    pub allowed_origins: Vec<String>,
    /// Open TCP connections from one address (IPv6: one /64); 0: no limit.
    pub max_connections_per_ip: u32,
    /// New TCP connections from one address per second; 0: no limit.
    pub new_connections_per_ip_per_s: u32,
    pub tls: Option<TlsFiles>,
    pub max_message_size: usize,
    pub outbox_max_bytes: usize,
    pub write_batch_bytes: usize,
    /// See `connection.write_coalesce_us`; zero disables coalescing.
    pub write_coalesce: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub close_timeout: Duration,
    pub max_subscriptions: usize,
    pub max_fragments: usize,
    pub lz4_threshold: usize,
    pub max_json_depth: usize,
    pub rate_limits: RateLimits,
    pub auth: Auth,
    /// `groups.balance`.
    pub default_balance: Balance,
    /// `presence.max_users`.
    pub presence_max_users: usize,
    pub store: StoreConfig,
    /// `[ack]`, `[inbox]`, `[dedup]`; inbox and dedup bounds are for the whole server.
    pub delivery: DeliveryConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[history]`; `max_bytes` for the whole server.
    pub history: HistoryConfig,
    /// `[alerting]` and the alert rules.
    pub alerting: AlertingConfig,
    /// `log.format`.
    pub log_format: LogFormat,
}

/// How many client sockets the server keeps at once, resolved against the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBudget {
    /// WebSocket connections, all shards together (503 beyond).
    pub max_connections: usize,
    /// TCP sockets, upgraded or not; past it a new one is answered 503 and closed at once.
    pub max_sockets: usize,
}

impl Config {
    /// Resolves `max_connections` against `nofile`, the process's open-file limit: with 0, all
    /// descriptors but [`FD_RESERVE`]; a larger configured value is lowered to that, so that the
    /// server answers 503 rather than failing `accept` with EMFILE.
    pub fn socket_budget(&self, nofile: u64) -> SocketBudget {
        let max_sockets = (nofile as usize).saturating_sub(FD_RESERVE).max(1);
        let max_connections = match self.max_connections {
            0 => max_sockets,
            n => n.min(max_sockets),
        };
        SocketBudget {
            max_connections,
            max_sockets,
        }
    }
}

/// Largest frame header, so an outbox always holds one max-size message.
const FRAME_OVERHEAD: usize = 14;

impl FileConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| parse_error(origin, e))?;
        Self::from_table(table, origin)
    }

    /// Reads `path`, or the embedded default when `path` is `None`, then applies
    /// `WSEDGE_<SECTION>_<KEY>` overrides from `env` (name, value pairs).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?,
                format!(" in {}", p.display()),
            ),
            None => (
                DEFAULT_CONFIG_TOML.to_string(),
                " (embedded default)".to_string(),
            ),
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| parse_error(&origin, e))?;
        let check = |probe| {
            FileConfig::deserialize(toml::Value::Table(probe))
                .map(drop)
                .map_err(|e| e.to_string().trim().to_string())
        };
        let overrides = env::apply(&mut table, env, check)?;
        let mut file = Self::from_table(table, &origin)?;
        file.overrides = overrides;
        Ok(file)
    }

    fn from_table(table: toml::Table, origin: &str) -> Result<Self, ConfigError> {
        FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| parse_error(origin, e))
    }

    /// Checks every value and resolves defaults that depend on the machine.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        let overrides = std::mem::take(&mut self.overrides);
        self.check().map_err(|e| env::attribute(e, &overrides))
    }

    fn check(self) -> Result<Config, ConfigError> {
        let rate_limits = self.limits.validate(self.connection.max_message_size)?;
        let auth = self.auth.validate()?;
        let (default_balance, max_durable_groups) = self.groups.validate()?;
        let presence_max_users = self.presence.validate()?;
        let store = self.store.validate(self.connection.max_message_size)?;
        let api = self.api.validate()?;
        let history = self.history.validate()?;
        let alerting = self.alerting.validate(&self.alerts)?;
        let log_format = self.log.validate()?;
        let delivery = delivery::delivery(
            &self.ack,
            &self.inbox,
            &self.dedup,
            self.protocol.lz4_threshold,
            max_durable_groups,
        )?;
        let (s, c, p, t) = (self.server, self.connection, self.protocol, self.tls);
        let listen = s.listen.parse().map_err(|e| {
            invalid(
                "server.listen",
                format!("{:?} is not an IP:port address ({e})", s.listen),
            )
        })?;
        let shards = match s.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > 1024 => {
                return Err(invalid("server.shards", format!("{n} is more than 1024")))
            }
            n => n,
        };
        let ms = |key, v| positive(key, v).map(Duration::from_millis);
        positive("server.listen_backlog", s.listen_backlog as u64)?;
        positive("server.shard_queue_capacity", s.shard_queue_capacity as u64)?;
        positive("connection.max_fragments", c.max_fragments as u64)?;
        if s.max_request_bytes < 8192 {
            return Err(invalid(
                "server.max_request_bytes",
                format!("{} is under hyper's minimum, 8192", s.max_request_bytes),
            ));
        }
        if s.handshake_budget_bytes < s.max_request_bytes {
            return Err(invalid(
                "server.handshake_budget_bytes",
                format!(
                    "{} must be at least server.max_request_bytes ({})",
                    s.handshake_budget_bytes, s.max_request_bytes
                ),
            ));
        }
        if s.shard_queue_max_bytes < c.max_message_size + 2 * FRAME_OVERHEAD + 256 {
            return Err(invalid(
                "server.shard_queue_max_bytes",
                format!(
                    "{} must hold one message of connection.max_message_size ({})",
                    s.shard_queue_max_bytes, c.max_message_size
                ),
            ));
        }
        if !(1..=MAX_JSON_DEPTH).contains(&p.max_json_depth) {
            return Err(invalid(
                "protocol.max_json_depth",
                format!("{} is not within 1-{MAX_JSON_DEPTH}", p.max_json_depth),
            ));
        }
        let tls = match (t.cert_file.is_empty(), t.key_file.is_empty()) {
            (true, true) => None,
            (false, false) => Some(TlsFiles {
                cert_file: t.cert_file.into(),
                key_file: t.key_file.into(),
            }),
            (true, false) => {
                return Err(invalid(
                    "tls.cert_file",
                    "missing: tls.key_file is set".into(),
                ))
            }
            (false, true) => {
                return Err(invalid(
                    "tls.key_file",
                    "missing: tls.cert_file is set".into(),
                ))
            }
        };
        let allowed_origins = s
            .allowed_origins
            .iter()
            .map(|origin| {
                let lower = origin.to_ascii_lowercase();
                let host = lower
                    .strip_prefix("https://")
                    .or_else(|| lower.strip_prefix("http://"))
                    .filter(|host| !host.is_empty() && !host.contains('/'));
                match host {
                    Some(_) => Ok(lower),
                    None => Err(invalid(
                        "server.allowed_origins",
                        format!("{origin:?} is not an origin like \"https://example.com\" (scheme://host[:port])"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        positive("connection.max_message_size", c.max_message_size as u64)?;
        positive("connection.write_batch_bytes", c.write_batch_bytes as u64)?;
        positive("connection.max_subscriptions", c.max_subscriptions as u64)?;
        if c.outbox_max_bytes < c.max_message_size + FRAME_OVERHEAD {
            return Err(invalid(
                "connection.outbox_max_bytes",
                format!(
                    "{} must be at least connection.max_message_size + {FRAME_OVERHEAD} ({}) so one message fits",
                    c.outbox_max_bytes,
                    c.max_message_size + FRAME_OVERHEAD
                ),
            ));
        }
        if c.write_coalesce_us > MAX_WRITE_COALESCE_US {
            return Err(invalid(
                "connection.write_coalesce_us",
                format!(
                    "{} is over the maximum {MAX_WRITE_COALESCE_US} (10 s)",
                    c.write_coalesce_us
                ),
            ));
        }
        let ping_interval = ms("connection.ping_interval_ms", c.ping_interval_ms)?;
        let idle_timeout = ms("connection.idle_timeout_ms", c.idle_timeout_ms)?;
        if idle_timeout <= ping_interval {
            return Err(invalid(
                "connection.idle_timeout_ms",
                format!(
                    "{} must be greater than connection.ping_interval_ms ({}), or live clients time out",
                    c.idle_timeout_ms, c.ping_interval_ms
                ),
            ));
        }
        Ok(Config {
            listen,
            shards,
            listen_backlog: s.listen_backlog,
            max_connections: s.max_connections,
            handshake_timeout: ms("server.handshake_timeout_ms", s.handshake_timeout_ms)?,
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
            shard_queue_capacity: s.shard_queue_capacity,
            shard_queue_max_bytes: s.shard_queue_max_bytes,
            max_request_bytes: s.max_request_bytes,
            max_pending_handshakes: s.handshake_budget_bytes / s.max_request_bytes,
            echo_endpoint: s.echo_endpoint,
            allowed_origins,
            max_connections_per_ip: s.max_connections_per_ip,
            new_connections_per_ip_per_s: s.new_connections_per_ip_per_s,
            tls,
            max_message_size: c.max_message_size,
            outbox_max_bytes: c.outbox_max_bytes,
            write_batch_bytes: c.write_batch_bytes,
            write_coalesce: Duration::from_micros(c.write_coalesce_us),
            ping_interval,
            idle_timeout,
            close_timeout: ms("connection.close_timeout_ms", c.close_timeout_ms)?,
            max_subscriptions: c.max_subscriptions,
            max_fragments: c.max_fragments,
            lz4_threshold: p.lz4_threshold,
            max_json_depth: p.max_json_depth,
            rate_limits,
            auth,
            default_balance,
            presence_max_users,
            store,
            delivery,
            api,
            history,
            alerting,
            log_format,
        })
    }
}

mod alerting;
mod api;
mod auth;
mod delivery;
mod env;
mod error;
mod groups;
mod limits;
use crate::alerts::RuleSection;
pub use alerting::{AlertingConfig, AlertingSection, LogFormat, LogSection};
pub use api::{ApiConfig, ApiSection};
pub use auth::{Auth, AuthSection};
pub use delivery::{
    AckSection, DedupSection, Durability, HistorySection, InboxSection, StoreConfig, StoreSection,
};
pub use error::ConfigError;
use error::{invalid, parse_error, positive};
pub use groups::{GroupsSection, PresenceSection};
pub use limits::LimitsSection;
pub use limits::{
    DEFAULT_CONTROL_FRAMES_BURST, DEFAULT_CONTROL_FRAMES_PER_S, DEFAULT_MESSAGES_BURST,
    DEFAULT_MESSAGES_PER_S, DEFAULT_PUBLISH_BURST_BYTES, DEFAULT_PUBLISH_BYTES_PER_S,
    DEFAULT_VIOLATIONS_BEFORE_CLOSE,
};
pub use wsedge_core::limits::{Rate, RateLimits};

#[cfg(test)]
mod tests;
