//! The server's metrics: each shard and the store count what they do in their own cells
//! ([`counter`]), without locks; a scrape of `/metrics` reads and merges them, so it costs
//! O(shards), never O(connections). [`render`] writes the Prometheus text format; [`process`]
//! reads the process's CPU, memory and file descriptors from `/proc`.
//!
//! What is sampled rather than counted (outbox bytes, inbox sizes) is set once a second by each
//! shard's tick (see `crate::shard::tick`).

mod cells;
mod counter;
mod labels;
mod process;
mod render;

pub use cells::{now_us, us_at, Metrics, ShardMetrics, StoreMetrics};
#[cfg(test)]
pub use labels::OPS;
pub use labels::{limit_index, op_index, rejection_index, CloseReason};
pub use render::{render, Live};
