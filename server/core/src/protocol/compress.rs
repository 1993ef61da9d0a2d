//! lz4 variant of a text frame for `wsedge.v1.lz4` clients: a binary frame holding the lz4 block
//! with its uncompressed size prepended as 4 little-endian bytes (lz4_flex
//! `compress_prepend_size` format), built in place behind the frame headroom.

use bytes::Bytes;

use super::frame::{self, OpCode, HEADROOM};

/// Compresses `payload` into a complete binary frame.
pub fn lz4_frame(payload: &[u8]) -> Bytes {
    let max = lz4_flex::block::get_maximum_output_size(payload.len());
    let mut buf = vec![0u8; HEADROOM + 4 + max];
    buf[HEADROOM..HEADROOM + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let written = lz4_flex::block::compress_into(payload, &mut buf[HEADROOM + 4..])
        .expect("output sized by get_maximum_output_size");
    buf.truncate(HEADROOM + 4 + written);
    frame::finish(buf, OpCode::Binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_decompress_size_prepended() {
        let payload =
            br#"{"op":"message","data":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#.repeat(50);
        let frame = lz4_frame(&payload);
        assert_eq!(frame[0], 0x82);
        let body = frame::payload_of(&frame);
        assert!(body.len() < payload.len());
        assert_eq!(lz4_flex::decompress_size_prepended(body).unwrap(), payload);
    }
}
