//! Sans-IO decoder for client-to-server WebSocket frames (RFC 6455 §5).
//!
//! Bytes in, [`Event`]s out. It validates as bytes arrive rather than per whole frame: a text
//! message is checked for UTF-8 incrementally (an invalid byte fails the connection at once, even
//! mid-frame), the running size of a fragmented message is held to `max_message_size` from the
//! frame header on and its frames to `max_fragments`, and it keeps no read buffer of its own
//! between events (only a partial header of at most 14 bytes and the message being assembled), so
//! an idle connection costs nothing here. A message's buffer grows with the bytes that arrive,
//! never by the length a header announces: a peer that announces 1 MiB and sends one byte holds
//! one byte.

use super::frame::HEADROOM;

/// The longest client frame header: 2 + 8 (length) + 4 (mask).
const MAX_HEADER: usize = 14;

/// What a complete run of client frames means.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (valid UTF-8).
    Text(Message),
    /// A complete binary message.
    Binary(Message),
    /// A ping; its payload (at most 125 bytes) must be echoed in a pong.
    Ping(Vec<u8>),
    /// A pong (the reply to a server ping).
    Pong,
    /// A close frame with its status code, if it had one (already checked to be a code an
    /// endpoint may send).
    Close(Option<u16>),
}

/// A reassembled message payload, stored behind [`HEADROOM`] free bytes so it can be turned into
/// an outgoing frame in place (see [`super::frame::finish`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buf[HEADROOM..]
    }

    /// The payload, mutable (simd-json parses in place).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[HEADROOM..]
    }

    /// The buffer with its headroom, for [`super::frame::finish`].
    pub fn into_frame_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// Why the connection must be failed; [`DecodeError::close_code`] is the code to send.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("control frame is fragmented")]
    FragmentedControl,
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    #[error("client frame is not masked")]
    Unmasked,
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    #[error("close code {0} is not allowed")]
    InvalidCloseCode(u16),
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    #[error("message of {size} bytes exceeds max_message_size ({limit})")]
    TooBig { size: u64, limit: usize },
    #[error("message in more than max_fragments ({limit}) frames")]
    TooManyFragments { limit: usize },
}

impl DecodeError {
    /// The close code that answers this error: 1007 for bad UTF-8, 1009 for size, 1008 for too
    /// many fragments (a policy, not a protocol violation), else 1002.
    pub fn close_code(&self) -> u16 {
        match self {
            DecodeError::InvalidUtf8 => 1007,
            DecodeError::TooBig { .. } => 1009,
            DecodeError::TooManyFragments { .. } => 1008,
            _ => 1002,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    fin: bool,
    opcode: u8,
    remaining: u64,
    mask: [u8; 4],
    /// Payload bytes of this frame already unmasked (the mask's phase).
    done: u64,
}

/// Incremental frame decoder; one per connection.
#[derive(Debug)]
pub struct Decoder {
    max_message_size: usize,
    max_fragments: usize,
    /// Frames of the message being assembled so far.
    fragments: usize,
    /// Frame headers parsed since the decoder was made.
    frames: u64,
    header: [u8; MAX_HEADER],
    header_len: usize,
    frame: Option<FrameHead>,
    /// The data message being assembled (with headroom), and its opcode (1 text, 2 binary).
    message: Vec<u8>,
    message_opcode: Option<u8>,
    /// Bytes of `message` (after the headroom) already known to be valid UTF-8.
    utf8_valid: usize,
    control: Vec<u8>,
}

impl Decoder {
    /// A decoder that rejects messages (all fragments together) larger than `max_message_size`
    /// or in more than `max_fragments` frames.
    pub fn new(max_message_size: usize, max_fragments: usize) -> Self {
        Decoder {
            max_message_size,
            max_fragments,
            fragments: 0,
            frames: 0,
            header: [0; MAX_HEADER],
            header_len: 0,
            frame: None,
            message: Vec::new(),
            message_opcode: None,
            utf8_valid: 0,
            control: Vec::new(),
        }
    }

    /// Consumes bytes from the front of `input` until one event is complete (returned) or `input`
    /// is empty (`Ok(None)`). Call again with the rest of `input` while it is not empty. After an
    /// error the decoder must not be used again.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Event>, DecodeError> {
        loop {
            let Some(mut head) = self.frame else {
                if !self.read_header(input)? {
                    return Ok(None);
                }
                continue;
            };
            let take = (head.remaining.min(input.len() as u64)) as usize;
            let (chunk, rest) = input.split_at(take);
            *input = rest;
            let is_data = head.opcode < 8;
            let target = if is_data {
                &mut self.message
            } else {
                &mut self.control
            };
            let start = target.len();
            target.extend_from_slice(chunk);
            let mut mask = head.mask;
            mask.rotate_left((head.done % 4) as usize);
            super::frame::unmask(&mut target[start..], mask);
            head.done += take as u64;
            head.remaining -= take as u64;
            if is_data && self.message_opcode == Some(1) {
                self.check_utf8(false)?;
            }
            if head.remaining > 0 {
                self.frame = Some(head);
                return Ok(None);
            }
            self.frame = None;
            if let Some(event) = self.complete(head)? {
                return Ok(Some(event));
            }
        }
    }

    /// Frame headers parsed so far (a measure of the work a peer's input costs, events or not).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Accumulates header bytes; returns true once a whole header is parsed and checked.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<bool, DecodeError> {
        let needed = |h: &[u8]| -> usize {
            if h.len() < 2 {
                return 2;
            }
            let ext = match h[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
        };
        loop {
            let want = needed(&self.header[..self.header_len]);
            if self.header_len >= want {
                break;
            }
            let take = (want - self.header_len).min(input.len());
            if take == 0 {
                return Ok(false);
            }
            self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
            self.header_len += take;
            *input = &input[take..];
        }
        let h = &self.header[..self.header_len];
        self.header_len = 0;
        self.frames += 1;
        let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
        if h[0] & 0x70 != 0 {
            return Err(DecodeError::ReservedBits);
        }
        if h[1] & 0x80 == 0 {
            return Err(DecodeError::Unmasked);
        }
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
            127 => (u64::from_be_bytes(h[2..10].try_into().unwrap()), 10),
            n => (n as u64, 2),
        };
        let mask: [u8; 4] = h[mask_at..mask_at + 4].try_into().unwrap();
        match opcode {
            0 if self.message_opcode.is_none() => return Err(DecodeError::UnexpectedContinuation),
            1 | 2 if self.message_opcode.is_some() => {
                return Err(DecodeError::ExpectedContinuation)
            }
            0..=2 => {
                let held = self.message.len().saturating_sub(HEADROOM) as u64;
                let size = held.saturating_add(len);
                if size > self.max_message_size as u64 {
                    return Err(DecodeError::TooBig {
                        size,
                        limit: self.max_message_size,
                    });
                }
                // Room for what has arrived, not for what the header announces.
                let arrived = len.min(input.len() as u64) as usize;
                if opcode != 0 {
                    self.message_opcode = Some(opcode);
                    self.utf8_valid = 0;
                    self.fragments = 1;
                    self.message = Vec::with_capacity(HEADROOM + arrived);
                    self.message.extend_from_slice(&[0; HEADROOM]);
                } else {
                    self.fragments += 1;
                    if self.fragments > self.max_fragments {
                        return Err(DecodeError::TooManyFragments {
                            limit: self.max_fragments,
                        });
                    }
                    self.message.reserve(arrived);
                }
            }
            8..=10 => {
                if !fin {
                    return Err(DecodeError::FragmentedControl);
                }
                if len > 125 {
                    return Err(DecodeError::ControlTooLong(len));
                }
                self.control.clear();
            }
            other => return Err(DecodeError::UnknownOpcode(other)),
        }
        self.frame = Some(FrameHead {
            fin,
            opcode,
            remaining: len,
            mask,
            done: 0,
        });
        Ok(true)
    }

    /// Extends the validated UTF-8 prefix of the message; at the message's end nothing may be left
    /// unvalidated.
    fn check_utf8(&mut self, at_end: bool) -> Result<(), DecodeError> {
        let body = &self.message[HEADROOM + self.utf8_valid..];
        match std::str::from_utf8(body) {
            Ok(_) => self.utf8_valid += body.len(),
            Err(e) if e.error_len().is_none() && !at_end => self.utf8_valid += e.valid_up_to(),
            Err(_) => return Err(DecodeError::InvalidUtf8),
        }
        Ok(())
    }

    fn complete(&mut self, head: FrameHead) -> Result<Option<Event>, DecodeError> {
        match head.opcode {
            0..=2 if !head.fin => Ok(None),
            0..=2 => {
                let opcode = self.message_opcode.take();
                let message = Message {
                    buf: std::mem::take(&mut self.message),
                };
                if opcode == Some(1) {
                    let valid = self.utf8_valid;
                    self.utf8_valid = 0;
                    if valid != message.payload().len() {
                        return Err(DecodeError::InvalidUtf8);
                    }
                    Ok(Some(Event::Text(message)))
                } else {
                    Ok(Some(Event::Binary(message)))
                }
            }
            8 => Ok(Some(Event::Close(parse_close(&self.control)?))),
            9 => Ok(Some(Event::Ping(std::mem::take(&mut self.control)))),
            _ => Ok(Some(Event::Pong)),
        }
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<u16>, DecodeError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(DecodeError::InvalidClosePayload),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_allowed_close_code(code) {
                return Err(DecodeError::InvalidCloseCode(code));
            }
            std::str::from_utf8(&payload[2..]).map_err(|_| DecodeError::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

/// Whether a peer may send `code` (RFC 6455 §7.4): the defined codes a peer may send and the
/// ranges 3000-4999; never 1004-1006, 1015 or an unassigned code.
fn is_allowed_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests;
