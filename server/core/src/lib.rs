//! wsedge-core: everything wsedge decides, with no tokio, no sockets and no clock reads (the time
//! is always an argument), so every rule is unit-tested in microseconds.
//!
//! - [`protocol`]: frame decoding and encoding, request envelopes, replies, lz4.
//! - [`ids`]: connection and message ids.
//! - [`message`]: a published message, encoded once and shared by every recipient.
//! - [`outbox`]: a connection's four priority lanes under a byte budget.
//! - [`limits`]: per-connection token buckets.
//! - [`auth`]: a JWT in, a user id, expiry and permissions out.
//! - [`topic`]: channel names and subscription patterns (`*`, `>`).
//! - [`broker`]: who gets what: channels, batches; inputs in, [`broker::Effects`] out.

#![forbid(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod ids;
pub mod limits;
pub mod message;
pub mod outbox;
pub mod protocol;
pub mod topic;
