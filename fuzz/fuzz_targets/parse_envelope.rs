//! Arbitrary text through the request parser, as a shard gets it: it must answer every input
//! with a request or a rejection, never panic or overflow its stack, and never let a too-deep
//! value or a lone surrogate through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsedge_core::protocol::envelope::{self, ErrorCode};
use wsedge_core::protocol::json_check;

const MAX_DEPTH: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut input = data.to_vec();
    let mut buffers = simd_json::Buffers::default();
    let checked = json_check::check(data, MAX_DEPTH);
    let code = envelope::parse(&mut input, &mut buffers, MAX_DEPTH).err().map(|r| r.code);
    if checked.is_err() {
        assert_eq!(code, Some(ErrorCode::InvalidJson));
    }
});
