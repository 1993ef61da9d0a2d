//! The frame a connection is sent for the answer to one of its requests that waited (for another
//! shard or the store): an `ok` (with what it carries) only when the request had a `ref`, an
//! error always, a `history` answer always.

use bytes::Bytes;
use wsedge_core::broker::Answer;
use wsedge_core::protocol::frame::payload_of;
use wsedge_core::protocol::reply;

use crate::metrics::ShardMetrics;

/// The frame for `answer`, given the request's `ref` (already encoded as JSON text); `None`
/// when nothing is to be sent. A refusal is counted in `metrics`.
pub(super) fn frame(
    answer: Answer,
    reference: Option<&str>,
    metrics: &ShardMetrics,
) -> Option<Bytes> {
    let frame = match (answer, reference) {
        (Answer::Ok, Some(reference)) => reply::ok_raw(reference),
        (Answer::Duplicate, Some(reference)) => reply::ok_duplicate(reference),
        (Answer::Scheduled(id), Some(reference)) => reply::ok_scheduled(reference, &id),
        (
            Answer::Position {
                epoch,
                offset,
                recovered,
            },
            Some(reference),
        ) => reply::ok_position(reference, &epoch, offset, recovered),
        (Answer::History { channel, read }, reference) => {
            let payloads: Vec<&[u8]> = read.messages.iter().map(|m| payload_of(&m.frame)).collect();
            reply::history(
                reference,
                &channel,
                &read.epoch,
                read.offset,
                read.recovered,
                &payloads,
            )
        }
        (Answer::Ok | Answer::Duplicate | Answer::Scheduled(_) | Answer::Position { .. }, None) => {
            return None
        }
        (Answer::Refused(refusal), reference) => {
            metrics.errors[refusal.code() as usize].inc();
            reply::error_raw(reference, refusal.code(), &refusal.to_string())
        }
    };
    Some(frame)
}
