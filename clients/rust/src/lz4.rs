//! `wsedge.v1.lz4` frames: a message's JSON text as an lz4 block, preceded by its length (4
//! bytes, little-endian; lz4_flex `compress_prepend_size`).

/// The text of a binary frame, refused (1009) before anything is allocated when it says it is
/// longer than `max` bytes, or (1007) when it is not a valid block of that length: `Err((close
/// code, reason))`.
pub(crate) fn lz4_text(frame: &[u8], max: usize) -> Result<Vec<u8>, (u16, String)> {
    let Some((size, block)) = frame.split_first_chunk::<4>() else {
        return Err((1007, "an lz4 frame shorter than its length".into()));
    };
    let size = u32::from_le_bytes(*size) as usize;
    if size > max {
        let reason = format!("an lz4 message of {size} bytes (max_message_size {max})");
        return Err((1009, reason));
    }
    let text =
        lz4_flex::decompress(block, size).map_err(|e| (1007, format!("bad lz4 frame: {e}")))?;
    if text.len() != size {
        return Err((1007, "an lz4 block shorter than its length".into()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_read_within_its_bound_and_refused_past_it() {
        let text = "x".repeat(5000);
        let frame = lz4_flex::compress_prepend_size(text.as_bytes());
        assert_eq!(lz4_text(&frame, 5000).unwrap(), text.as_bytes());
        assert_eq!(lz4_text(&frame, 4999).unwrap_err().0, 1009);
        // A 4 GiB claim in 9 bytes is refused before any allocation.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, 0];
        assert_eq!(lz4_text(&bomb, 16 << 20).unwrap_err().0, 1009);
        assert_eq!(lz4_text(&[1, 0], 16).unwrap_err().0, 1007);
        let mut short = frame.clone();
        short.truncate(frame.len() - 3);
        assert_eq!(lz4_text(&short, 5000).unwrap_err().0, 1007);
    }
}
