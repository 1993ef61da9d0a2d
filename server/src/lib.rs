//! wsedge: a sharded-per-core WebSocket edge server.
//!
//! Layout, one line per module:
//! - [`config`]: the config file, `WSEDGE_*` overrides and validation.
//! - [`server`]: start the shard threads, shut them down.
//! - [`shard`]: a shard's runtime and state; [`shard::mailbox`] its cross-shard queue,
//!   [`shard::channels`] its channel → subscribers index.
//! - [`listener`]: SO_REUSEPORT listeners and the accept loop.
//! - [`http`]: `/ws`, `/echo`, `/health` on hyper; the upgrade and subprotocol choice.
//! - [`connection`]: a connection's handle and its read/write/timer task.
//! - [`transport`]: an upgraded connection's stream, plain TCP or TLS; [`tls`] loads `[tls]`.
//! - [`handler`]: what each protocol v1 request does.
//! - [`limits`]: per-connection token buckets (`[limits]`), pure.
//! - [`outbox`]: the four priority lanes under a byte budget, drained into vectored writes.
//! - [`per_ip`]: per-client-address connection limits, lock-free across shards.
//! - [`message`]: a published message, encoded once and shared by every recipient.
//! - [`notify`]: a lock-free shard-local wake-up.
//! - [`protocol`]: the sans-IO core: frame decoding and encoding, envelopes, replies, lz4.

pub mod config;
pub mod connection;
pub mod handler;
pub mod http;
pub mod limits;
pub mod listener;
pub mod message;
pub mod notify;
pub mod outbox;
pub mod per_ip;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod tls;
pub mod transport;

pub use config::{Config, FileConfig};
pub use server::Server;
