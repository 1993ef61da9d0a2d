//! Arbitrary client bytes, cut into arbitrary reads, through the frame decoder: it must never
//! panic, and whatever it returns must respect its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsedge_core::protocol::decoder::{Decoder, Event};

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read sizes, so cuts land anywhere.
    let Some((&cut, mut input)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut % 64) + 1;
    let mut decoder = Decoder::new(MAX_MESSAGE, 16);
    while !input.is_empty() {
        let (mut chunk, rest) = input.split_at(step.min(input.len()));
        input = rest;
        while !chunk.is_empty() {
            match decoder.decode(&mut chunk) {
                Ok(Some(Event::Text(m))) => {
                    assert!(m.payload().len() <= MAX_MESSAGE);
                    assert!(std::str::from_utf8(m.payload()).is_ok());
                }
                Ok(Some(Event::Binary(m))) => assert!(m.payload().len() <= MAX_MESSAGE),
                Ok(Some(Event::Ping(p))) => assert!(p.len() <= 125),
                Ok(Some(Event::Close(Some(code)))) => assert!(code >= 1000),
                Ok(_) => {}
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1008 | 1009));
                    return;
                }
            }
        }
    }
});
