//! A published message: encoded once into an immutable frame that every recipient on every shard
//! shares, with its lz4 variant built at most once, on first demand.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::protocol::{compress, frame, Priority};

/// One message on its way to a channel's subscribers. Shared across shards as `Arc<Published>`.
#[derive(Debug)]
pub struct Published {
    pub channel: Box<str>,
    pub priority: Priority,
    /// The complete text frame of the `{"op":"message",...}` JSON.
    pub frame: Bytes,
    /// The publisher's `msg_id`: acknowledged groups keep one copy per id within the dedup
    /// window.
    pub msg_id: Option<Box<str>>,
    /// Written at once, not held back for write coalescing nor batched: a scheduled message at
    /// its time.
    pub urgent: bool,
    /// When the server read the request that published it, in the runtime's monotonic
    /// microseconds (0: not measured). Delivery latency is measured from it.
    pub born_us: u64,
    lz4: OnceLock<Bytes>,
    lz4_threshold: usize,
}

impl Published {
    pub fn new(channel: &str, priority: Priority, frame: Bytes, lz4_threshold: usize) -> Self {
        Published {
            channel: channel.into(),
            priority,
            frame,
            msg_id: None,
            urgent: false,
            born_us: 0,
            lz4: OnceLock::new(),
            lz4_threshold,
        }
    }

    /// The frame a recipient gets: the lz4 binary frame for `wsedge.v1.lz4` clients when the JSON
    /// is at least the threshold, else the text frame.
    pub fn frame_for(&self, lz4: bool) -> &Bytes {
        let payload = frame::payload_of(&self.frame);
        if lz4 && payload.len() >= self.lz4_threshold {
            self.lz4.get_or_init(|| compress::lz4_frame(payload))
        } else {
            &self.frame
        }
    }
}
