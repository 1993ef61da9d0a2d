//! A connection's outbound queue: four priority lanes under one byte budget, drained highest lane
//! first into vectored writes.
//!
//! Frames are shared [`Bytes`]; queuing one costs a reference count, never a copy. A frame that a
//! write left half-sent is held apart and always finished first, so a later critical frame can
//! overtake whole frames but never split one on the wire.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

use crate::protocol::Priority;

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// The budget was full: the frame was `low` and was dropped (and counted).
    DroppedLow,
    /// The budget is full even with every queued `low` frame evicted: the consumer is too slow.
    Overflow,
}

/// Per-connection priority outbox.
#[derive(Debug)]
pub struct Outbox {
    lanes: [VecDeque<Bytes>; 4],
    /// The rest of a frame a previous write sent only part of.
    partial: Bytes,
    queued_bytes: usize,
    max_bytes: usize,
    dropped_low: u64,
}

impl Outbox {
    /// An empty outbox holding at most `max_bytes` of queued frames.
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            lanes: Default::default(),
            partial: Bytes::new(),
            queued_bytes: 0,
            max_bytes,
            dropped_low: 0,
        }
    }

    /// Queues `frame` in `lane`. Over budget, queued `low` frames are evicted oldest first to make
    /// room; a `low` frame that does not fit is dropped; anything else that does not fit is
    /// [`Push::Overflow`] and is not queued.
    pub fn push(&mut self, lane: Priority, frame: Bytes) -> Push {
        let len = frame.len();
        if self.queued_bytes + len > self.max_bytes {
            if lane == Priority::Low {
                self.dropped_low += 1;
                return Push::DroppedLow;
            }
            let low = &mut self.lanes[Priority::Low as usize];
            while self.queued_bytes + len > self.max_bytes {
                let Some(evicted) = low.pop_front() else {
                    return Push::Overflow;
                };
                self.queued_bytes -= evicted.len();
                self.dropped_low += 1;
            }
        }
        self.queued_bytes += len;
        self.lanes[lane as usize].push_back(frame);
        Push::Queued
    }

    /// Queues the last frame (a close) regardless of the budget: after everything queued, or,
    /// with `discard`, instead of it (a half-written frame is always finished first).
    pub fn push_final(&mut self, frame: Bytes, discard: bool) {
        if discard {
            for lane in &mut self.lanes {
                lane.clear();
            }
            self.queued_bytes = 0;
        }
        self.queued_bytes += frame.len();
        // Last in the lowest lane is last on the wire: nothing is queued after a final frame.
        self.lanes[Priority::Low as usize].push_back(frame);
    }

    /// True when nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty() && self.queued_bytes == 0
    }

    /// Bytes queued (not counting the rest of a half-written frame).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// `low` frames dropped for lack of room so far.
    pub fn dropped_low(&self) -> u64 {
        self.dropped_low
    }

    /// Fills the front of `slices` with the next frames in send order, up to about `budget` bytes
    /// (at least one frame) and `slices.len()` slices; returns (slices filled, bytes offered).
    /// The caller's array lives on its stack: gathering allocates nothing. Pass what was written
    /// to [`Outbox::consume`].
    pub fn gather<'a>(&'a self, budget: usize, slices: &mut [IoSlice<'a>]) -> (usize, usize) {
        let (mut count, mut total) = (0, 0);
        let frames = std::iter::once(&self.partial)
            .filter(|p| !p.is_empty())
            .chain(self.lanes.iter().flatten());
        for frame in frames {
            if count == slices.len() || (total > 0 && total + frame.len() > budget) {
                break;
            }
            total += frame.len();
            slices[count] = IoSlice::new(frame);
            count += 1;
        }
        (count, total)
    }

    /// Removes `written` bytes from the front, in the order [`Outbox::gather`] produced them.
    pub fn consume(&mut self, mut written: usize) {
        let from_partial = written.min(self.partial.len());
        self.partial.advance(from_partial);
        written -= from_partial;
        for lane in &mut self.lanes {
            while written > 0 {
                let Some(front) = lane.front() else { break };
                if front.len() > written {
                    let mut rest = lane.pop_front().unwrap();
                    self.queued_bytes -= rest.len();
                    rest.advance(written);
                    self.partial = rest;
                    return;
                }
                written -= front.len();
                self.queued_bytes -= front.len();
                lane.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    /// The bytes `gather` offers, and in how many slices.
    fn gathered(outbox: &Outbox, budget: usize, max_slices: usize) -> (Vec<u8>, usize) {
        let mut slices = vec![IoSlice::new(&[]); max_slices];
        let (count, total) = outbox.gather(budget, &mut slices);
        let wire: Vec<u8> = slices[..count].iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(wire.len(), total);
        (wire, count)
    }

    fn drain(outbox: &mut Outbox, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !outbox.is_empty() {
            let (wire, _) = gathered(outbox, usize::MAX, 64);
            let n = wire.len().min(chunk);
            out.extend_from_slice(&wire[..n]);
            outbox.consume(n);
        }
        out
    }

    #[test]
    fn higher_lanes_drain_first_and_each_lane_is_fifo() {
        let mut o = Outbox::new(1 << 20);
        for (lane, tag) in [
            (Priority::Low, b'l'),
            (Priority::Normal, b'n'),
            (Priority::High, b'h'),
            (Priority::Critical, b'c'),
            (Priority::Normal, b'N'),
            (Priority::Critical, b'C'),
        ] {
            assert_eq!(o.push(lane, frame(tag, 2)), Push::Queued);
        }
        assert_eq!(drain(&mut o, usize::MAX), b"ccCChhnnNNll");
    }

    #[test]
    fn a_half_written_frame_is_finished_before_a_later_critical_frame() {
        let mut o = Outbox::new(1 << 20);
        o.push(Priority::Normal, frame(b'n', 4));
        o.consume(1);
        o.push(Priority::Critical, frame(b'c', 2));
        assert_eq!(drain(&mut o, 1), b"nnncc");
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn gather_respects_byte_and_slice_budgets() {
        let mut o = Outbox::new(1 << 20);
        for _ in 0..10 {
            o.push(Priority::Normal, frame(0, 100));
        }
        assert_eq!(gathered(&o, 350, 64).1, 3);
        assert_eq!(gathered(&o, 10_000, 4).1, 4);
        assert_eq!(
            gathered(&o, 10, 4).1,
            1,
            "at least one frame even over budget"
        );
    }

    #[test]
    fn over_budget_low_is_dropped_then_evicted_then_overflow() {
        let mut o = Outbox::new(10);
        assert_eq!(o.push(Priority::Low, frame(b'a', 4)), Push::Queued);
        assert_eq!(o.push(Priority::Low, frame(b'b', 4)), Push::Queued);
        assert_eq!(o.push(Priority::Low, frame(b'x', 4)), Push::DroppedLow);
        assert_eq!(
            o.push(Priority::Normal, frame(b'n', 4)),
            Push::Queued,
            "evicts 'a'"
        );
        assert_eq!(o.dropped_low(), 2);
        assert_eq!(o.push(Priority::High, frame(b'h', 8)), Push::Overflow);
        assert_eq!(
            o.queued_bytes(),
            4,
            "'b' was evicted, the high frame not queued"
        );
        o.push_final(frame(b'z', 20), true);
        assert_eq!(drain(&mut o, usize::MAX), vec![b'z'; 20]);
        o.push(Priority::Normal, frame(b'n', 2));
        o.push_final(frame(b'z', 1), false);
        assert_eq!(drain(&mut o, usize::MAX), b"nnz");
    }
}
