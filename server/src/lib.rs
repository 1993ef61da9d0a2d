//! wsedge: a sharded-per-core WebSocket edge server. The delivery rules and the protocol live in
//! the sans-IO crate [`wsedge_core`]; this crate is the runtime around them.
//!
//! Layout, one line per module (dependencies point up this list, never down):
//! - `alerts`: alert rules, their evaluation over scrapes, the webhook.
//! - [`config`]: the config file, `WSEDGE_<SECTION>_<KEY>` overrides and validation.
//! - `metrics`: per-shard metric cells, merged and rendered at scrape.
//! - `notify`, `per_ip`, `tls`: a shard-local wake-up, per-address connection limits, `[tls]`.
//! - `conn`: a connection's IO-free handle (its outbox and close state) and its transport.
//! - `shard`: a shard's state, its [`wsedge_core::broker::Broker`] and the effects it applies;
//!   `shard::dispatch` carries out requests, `shard::mailbox` carries messages between shards,
//!   `shard::coalesce` releases held writes.
//! - `conn::session`: a connection's read/write/timer task.
//! - `http`: `/ws`, `/echo`, `/health` on hyper; `http::upgrade` the WebSocket upgrade.
//! - `listener`: SO_REUSEPORT listeners and the accept loop.
//! - `monitor`: the once-a-second thread behind alerts and the dashboard.
//! - [`runtime`]: the shard threads and what each runs; [`Server`] starts and stops them.

mod alerts;
pub mod config;
mod conn;
mod http;
mod listener;
mod metrics;
mod monitor;
mod notify;
mod per_ip;
pub mod runtime;
mod shard;
mod store;
mod tls;

pub use config::{Config, FileConfig};
pub use http::{SUBPROTOCOL, SUBPROTOCOL_LZ4};
pub use runtime::Server;
