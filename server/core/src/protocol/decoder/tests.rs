use super::*;
use crate::protocol::frame::encode_client;

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

fn decode_all(d: &mut Decoder, mut input: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    while !input.is_empty() {
        if let Some(e) = d.decode(&mut input)? {
            events.push(e);
        }
    }
    Ok(events)
}

fn text(e: &Event) -> &[u8] {
    match e {
        Event::Text(m) => m.payload(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn decodes_a_frame_fed_one_byte_at_a_time() {
    let wire = encode_client(true, 1, "héllo wörld".as_bytes(), MASK);
    let mut d = Decoder::new(1024, 16_384);
    let mut events = Vec::new();
    for b in &wire {
        events.extend(decode_all(&mut d, std::slice::from_ref(b)).unwrap());
    }
    assert_eq!(events.len(), 1);
    assert_eq!(text(&events[0]), "héllo wörld".as_bytes());
}

#[test]
fn decodes_every_length_encoding_and_back_to_back_frames() {
    let mut wire = Vec::new();
    for len in [0, 125, 126, 65535, 65536] {
        wire.extend(encode_client(true, 2, &vec![9; len], MASK));
    }
    let events = decode_all(&mut Decoder::new(1 << 20, 16_384), &wire).unwrap();
    let lens: Vec<usize> = events
        .iter()
        .map(|e| match e {
            Event::Binary(m) => m.payload().len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lens, [0, 125, 126, 65535, 65536]);
}

#[test]
fn reassembles_fragments_with_utf8_split_across_them_and_control_frames_between() {
    let s = "a€b".as_bytes(); // € is 3 bytes: split it across two fragments
    let mut wire = encode_client(false, 1, &s[..2], MASK);
    wire.extend(encode_client(true, 9, b"p", MASK));
    wire.extend(encode_client(true, 0, &s[2..], MASK));
    let events = decode_all(&mut Decoder::new(64, 16_384), &wire).unwrap();
    assert_eq!(events[0], Event::Ping(b"p".to_vec()));
    assert_eq!(text(&events[1]), s);
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    let mut payload = b"valid ".to_vec();
    payload.extend([0xff, 0xfe]);
    payload.extend(vec![b'x'; 100]);
    let wire = encode_client(true, 1, &payload, MASK);
    let mut d = Decoder::new(1024, 16_384);
    let mut partial = &wire[..2 + 4 + 8]; // header + the first 8 payload bytes
    assert_eq!(d.decode(&mut partial), Err(DecodeError::InvalidUtf8));
}

#[test]
fn truncated_utf8_at_message_end_is_invalid() {
    let wire = encode_client(true, 1, &"€".as_bytes()[..2], MASK);
    assert_eq!(
        decode_all(&mut Decoder::new(64, 16_384), &wire),
        Err(DecodeError::InvalidUtf8)
    );
}

#[test]
fn size_limit_counts_all_fragments_and_fails_at_the_header() {
    let mut d = Decoder::new(100, 16_384);
    let mut wire = encode_client(false, 2, &[0; 60], MASK);
    wire.extend(&encode_client(true, 0, &[0; 60], MASK)[..8]); // only the header of frame 2
    assert_eq!(
        decode_all(&mut d, &wire),
        Err(DecodeError::TooBig {
            size: 120,
            limit: 100
        })
    );
    assert_eq!(DecodeError::TooBig { size: 0, limit: 0 }.close_code(), 1009);
}

#[test]
fn protocol_violations_map_to_1002() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![0x81, 0x00], DecodeError::Unmasked),
        (
            encode_client(true, 0x41, b"", MASK),
            DecodeError::ReservedBits,
        ),
        (
            encode_client(true, 3, b"", MASK),
            DecodeError::UnknownOpcode(3),
        ),
        (
            encode_client(false, 9, b"", MASK),
            DecodeError::FragmentedControl,
        ),
        (
            encode_client(true, 9, &[0; 126], MASK),
            DecodeError::ControlTooLong(126),
        ),
        (
            encode_client(true, 0, b"x", MASK),
            DecodeError::UnexpectedContinuation,
        ),
        (
            encode_client(true, 8, b"x", MASK),
            DecodeError::InvalidClosePayload,
        ),
        (
            encode_client(true, 8, &1005u16.to_be_bytes(), MASK),
            DecodeError::InvalidCloseCode(1005),
        ),
        (
            encode_client(true, 8, &999u16.to_be_bytes(), MASK),
            DecodeError::InvalidCloseCode(999),
        ),
    ];
    for (wire, want) in cases {
        let got = decode_all(&mut Decoder::new(1024, 16_384), &wire);
        assert_eq!(got, Err(want.clone()), "{wire:x?}");
        assert_eq!(want.close_code(), 1002);
    }
    let mut wire = encode_client(false, 1, b"a", MASK);
    wire.extend(encode_client(true, 1, b"b", MASK));
    assert_eq!(
        decode_all(&mut Decoder::new(64, 16_384), &wire),
        Err(DecodeError::ExpectedContinuation)
    );
}

#[test]
fn close_frames_carry_their_code() {
    let mut wire = encode_client(true, 8, b"", MASK);
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend(b"bye");
    wire.extend(encode_client(true, 8, &payload, MASK));
    let events = decode_all(&mut Decoder::new(64, 16_384), &wire).unwrap();
    assert_eq!(events, [Event::Close(None), Event::Close(Some(4000))]);
    let mut bad = 1000u16.to_be_bytes().to_vec();
    bad.push(0xff);
    let wire = encode_client(true, 8, &bad, MASK);
    assert_eq!(
        decode_all(&mut Decoder::new(64, 16_384), &wire),
        Err(DecodeError::InvalidUtf8)
    );
}

/// A small deterministic PRNG (xorshift64*), so the randomized tests need no dependency and
/// replay the same cases every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n.max(1)) as usize
    }
}

#[test]
fn any_chunking_of_valid_frames_decodes_the_same() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let text: String = (0..rng.below(300))
                .map(|i| ['a', 'é', '€', '𝄞'][(i + rng.below(4)) % 4])
                .collect();
            let bytes = text.as_bytes();
            // Split into up to three fragments at arbitrary byte positions (even mid-character).
            let cut1 = rng.below(bytes.len() as u64 + 1);
            let cut2 = cut1 + rng.below((bytes.len() - cut1) as u64 + 1);
            let parts = [&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]];
            for (i, part) in parts.iter().enumerate() {
                let mask = (rng.next() as u32).to_be_bytes();
                wire.extend(encode_client(
                    i == 2,
                    if i == 0 { 1 } else { 0 },
                    part,
                    mask,
                ));
            }
            expected.push(text);
        }
        let mut d = Decoder::new(1 << 20, 16_384);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let take = 1 + rng.below(rest.len() as u64);
            got.extend(decode_all(&mut d, &rest[..take]).unwrap());
            rest = &rest[take..];
        }
        let texts: Vec<String> = got
            .iter()
            .map(|e| String::from_utf8(text(e).to_vec()).unwrap())
            .collect();
        assert_eq!(texts, expected);
    }
}

#[test]
fn random_bytes_never_panic_and_errors_map_to_close_codes() {
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let len = rng.below(64);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 && !input.is_empty() {
            input[0] = 0x80 | [0, 1, 2, 8, 9, 10][rng.below(6)] as u8; // plausible first byte
        }
        let mut d = Decoder::new(128, 16_384);
        match decode_all(&mut d, &input) {
            Ok(_) => {}
            Err(e) => assert!([1002, 1007, 1009].contains(&e.close_code()), "{e}"),
        }
    }
}

#[test]
fn a_partial_frame_holds_what_arrived_not_what_it_announced() {
    let mut wire = encode_client(true, 2, &vec![7; (1 << 20) - 1], MASK);
    wire.truncate(14 + 1);
    let mut d = Decoder::new(1 << 20, 16_384);
    assert_eq!(decode_all(&mut d, &wire).unwrap(), vec![]);
    assert!(d.message.capacity() < 1024, "{}", d.message.capacity());
    // The rest, arriving in pieces, still makes the whole message.
    let whole = encode_client(true, 2, &vec![7; (1 << 20) - 1], MASK);
    let events = whole[15..]
        .chunks(5000)
        .flat_map(|chunk| decode_all(&mut d, chunk).unwrap())
        .collect::<Vec<_>>();
    assert!(matches!(&events[..], [Event::Binary(m)] if m.payload().len() == (1 << 20) - 1));
}

#[test]
fn more_fragments_than_max_fragments_is_closed_with_1008() {
    let mut wire = encode_client(false, 1, b"a", MASK);
    for _ in 0..4 {
        wire.extend(encode_client(false, 0, b"", MASK));
    }
    let mut within = wire.clone();
    within.extend(encode_client(true, 0, b"", MASK));
    let events = decode_all(&mut Decoder::new(64, 6), &within).unwrap();
    assert_eq!(text(&events[0]), b"a");
    wire.extend(encode_client(false, 0, b"", MASK));
    wire.extend(encode_client(true, 0, b"", MASK));
    let err = decode_all(&mut Decoder::new(64, 6), &wire).unwrap_err();
    assert_eq!(err, DecodeError::TooManyFragments { limit: 6 });
    assert_eq!(err.close_code(), 1008);
}
