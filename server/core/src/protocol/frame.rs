//! Server-to-client frame encoding (RFC 6455 §5.2). Server frames are never masked, so one encoded
//! frame is byte-for-byte valid for every recipient: it is built once and shared as [`Bytes`].

use bytes::Bytes;

/// Bytes reserved in front of a payload buffer so the header can be written in place, without
/// copying the payload: the longest server header (FIN/opcode, length 127, 8-byte length).
pub const HEADROOM: usize = 10;

/// WebSocket opcodes wsedge sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// A growable payload buffer with [`HEADROOM`] bytes in front, turned into a frame by [`finish`].
pub fn payload_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADROOM + capacity);
    buf.extend_from_slice(&[0; HEADROOM]);
    buf
}

/// Length of the header for a payload of `len` bytes.
pub const fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Writes the frame header in front of the payload held in `buf[HEADROOM..]` and returns the
/// whole frame. `buf` must come from [`payload_buffer`] (or otherwise start with `HEADROOM` bytes
/// that are free to overwrite).
pub fn finish(buf: Vec<u8>, opcode: OpCode) -> Bytes {
    debug_assert!(buf.len() >= HEADROOM);
    let mut buf = buf;
    let len = buf.len() - HEADROOM;
    let start = HEADROOM - header_len(len);
    let head = &mut buf[start..HEADROOM];
    head[0] = 0x80 | opcode as u8;
    match len {
        0..=125 => head[1] = len as u8,
        126..=65535 => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        }
    }
    Bytes::from(buf).slice(start..)
}

/// Encodes a complete frame around a copy of `payload`.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = payload_buffer(payload.len());
    buf.extend_from_slice(payload);
    finish(buf, opcode)
}

/// A close frame with `code` and a reason cut to fit a control frame (125 bytes, on a UTF-8
/// character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut buf = payload_buffer(2 + end);
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(&reason.as_bytes()[..end]);
    finish(buf, OpCode::Close)
}

/// A masked client frame with a raw opcode (so invalid ones can be built too): the input of
/// [`super::decoder::Decoder`] in tests, benchmarks and fuzzing.
pub fn encode_client(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The payload of an encoded (unmasked) frame; for tests and benchmarks.
pub fn payload_of(frame: &[u8]) -> &[u8] {
    match frame[1] & 0x7f {
        126 => &frame[4..],
        127 => &frame[10..],
        _ => &frame[2..],
    }
}

/// XORs `payload` with the 4-byte `mask`, starting at the mask's first byte; eight bytes at a
/// time (the compiler vectorizes the loop).
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes_follow_the_rfc() {
        for (len, head) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let frame = encode(OpCode::Binary, &vec![7; len]);
            assert_eq!(frame.len(), len + head, "len {len}");
            assert_eq!(frame[0], 0x82);
            assert!(frame[head..].iter().all(|&b| b == 7));
        }
        assert_eq!(&encode(OpCode::Text, b"hi")[..], b"\x81\x02hi");
        assert_eq!(&encode(OpCode::Text, &[0; 126])[..4], &[0x81, 126, 0, 126]);
        assert_eq!(
            &encode(OpCode::Text, &[0; 65536])[..10],
            &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn unmask_is_the_byte_wise_xor_at_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let mut data: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            unmask(&mut data, mask);
            assert_eq!(data, plain, "len {len}");
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let frame = close(1001, &"é".repeat(100));
        assert_eq!(frame[0], 0x88);
        let payload = &frame[2..];
        assert!(payload.len() <= 125);
        assert_eq!(&payload[..2], &1001u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
