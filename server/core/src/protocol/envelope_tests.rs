//! Request parsing: every op, every rejection with its code and `ref`, and arbitrary bytes.

use super::*;

fn parse_str(s: &str) -> Result<String, (Option<String>, &'static str)> {
    let mut buf = s.as_bytes().to_vec();
    let result = match parse(&mut buf, &mut Buffers::default(), 128) {
        Ok(r) => Ok(format!(
            "{:?} ref={:?}",
            r.op,
            r.reference.map(|v| v.encode())
        )),
        Err(e) => Err((e.reference.map(|v| v.encode()), e.code.as_str())),
    };
    result
}

#[test]
fn parses_every_op() {
    assert!(
        parse_str(r#"{"op":"subscribe","channel":"a.b:c-d_1","ref":7}"#)
            .unwrap()
            .contains("Subscribe")
    );
    let g = parse_str(
        r#"{"op":"subscribe","channel":"jobs.*","group":"workers","balance":"round_robin"}"#,
    )
    .unwrap();
    assert!(g.contains("workers") && g.contains("RoundRobin"), "{g}");
    assert!(parse_str(r#"{"op":"presence","channel":"room"}"#)
        .unwrap()
        .contains("Presence"));
    assert!(parse_str(r#"{"op":"subscribe","channel":"news.>"}"#)
        .unwrap()
        .contains("news.>"));
    assert!(parse_str(r#"{"op":"unsubscribe","channel":"x"}"#)
        .unwrap()
        .contains("Unsubscribe"));
    let p = parse_str(
        r#"{"op":"publish","channel":"x","data":{"k":[1,2]},"priority":"high","ref":"r"}"#,
    )
    .unwrap();
    assert!(
        p.contains("priority: High") && p.contains(r#"ref=Some("\"r\"")"#),
        "{p}"
    );
    assert!(parse_str(r#"{"op":"publish","channel":"x","data":null}"#)
        .unwrap()
        .contains("Normal"));
    assert!(
        parse_str(r#"{"op":"send","user":"bob","data":[1],"priority":"low"}"#)
            .unwrap()
            .contains("Send")
    );
    assert!(parse_str(r#"{"op":"ping","ref":{"a":1}}"#)
        .unwrap()
        .contains("Ping"));
    assert!(parse_str(r#"{"op":"echo","data":"hi"}"#)
        .unwrap()
        .contains("Echo"));
}

#[test]
fn rejects_with_a_code_and_keeps_the_ref() {
    let cases = [
        (r#"{"op":"subscribe""#, None, "invalid_json"),
        (r#"[1,2]"#, None, "not_an_object"),
        (r#"{"ref":1}"#, Some("1"), "missing_field"),
        (r#"{"op":5,"ref":1}"#, Some("1"), "invalid_field"),
        (r#"{"op":"dance","ref":"x"}"#, Some(r#""x""#), "unknown_op"),
        (r#"{"op":"subscribe","ref":2}"#, Some("2"), "missing_field"),
        (
            r#"{"op":"subscribe","channel":"","ref":2}"#,
            Some("2"),
            "bad_channel",
        ),
        (r#"{"op":"subscribe","channel":"a b"}"#, None, "bad_channel"),
        (r#"{"op":"subscribe","channel":7}"#, None, "bad_channel"),
        (
            r#"{"op":"subscribe","channel":"a.>.b"}"#,
            None,
            "bad_channel",
        ),
        (
            r#"{"op":"subscribe","channel":"news*"}"#,
            None,
            "bad_channel",
        ),
        (
            r#"{"op":"publish","channel":"news.*","data":1}"#,
            None,
            "bad_channel",
        ),
        (
            r#"{"op":"publish","channel":">","data":1}"#,
            None,
            "bad_channel",
        ),
        (r#"{"op":"publish","channel":"c"}"#, None, "missing_field"),
        (
            r#"{"op":"publish","channel":"c","data":1,"priority":"urgent"}"#,
            None,
            "invalid_field",
        ),
        (r#"{"op":"echo"}"#, None, "missing_field"),
        (r#"{"op":"refresh"}"#, None, "missing_field"),
        (
            r#"{"op":"subscribe","channel":"c","group":"a b","ref":1}"#,
            Some("1"),
            "invalid_field",
        ),
        (
            r#"{"op":"subscribe","channel":"c","group":7}"#,
            None,
            "invalid_field",
        ),
        (
            r#"{"op":"subscribe","channel":"c","balance":"round_robin"}"#,
            None,
            "invalid_field",
        ),
        (
            r#"{"op":"subscribe","channel":"c","group":"g","balance":"fair"}"#,
            None,
            "invalid_field",
        ),
        (
            r#"{"op":"subscribe","channel":"c","presence":"yes"}"#,
            None,
            "invalid_field",
        ),
        (
            r#"{"op":"publish","channel":"c","group":"g","data":1}"#,
            None,
            "invalid_field",
        ),
        (r#"{"op":"presence","channel":"c.*"}"#, None, "bad_channel"),
        (r#"{"op":"presence"}"#, None, "missing_field"),
        (
            r#"{"op":"subscribe","channel":"a.*","presence":true}"#,
            None,
            "invalid_field",
        ),
        (
            r#"{"op":"subscribe","channel":"a","group":"g","presence":true}"#,
            None,
            "invalid_field",
        ),
        (
            r#"{"op":"send","data":1,"ref":5}"#,
            Some("5"),
            "missing_field",
        ),
        (r#"{"op":"send","user":"","data":1}"#, None, "invalid_field"),
        (r#"{"op":"send","user":7,"data":1}"#, None, "invalid_field"),
        (r#"{"op":"send","user":"u"}"#, None, "missing_field"),
        (
            r#"{"op":"send","user":"u","data":1,"priority":"x","ref":6}"#,
            Some("6"),
            "invalid_field",
        ),
        (r#"{"op":"refresh","token":1}"#, None, "invalid_field"),
    ];
    for (input, reference, code) in cases {
        let got = parse_str(input).unwrap_err();
        assert_eq!((got.0.as_deref(), got.1), (reference, code), "{input}");
    }
    let long = "c".repeat(crate::protocol::MAX_CHANNEL_LEN + 1);
    let err = parse_str(&format!(r#"{{"op":"subscribe","channel":"{long}"}}"#)).unwrap_err();
    assert_eq!(err.1, "bad_channel");
}

#[test]
fn arbitrary_bytes_are_rejected_not_panicked_on() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let pieces: [&[u8]; 12] = [
        b"{",
        b"}",
        b"\"op\"",
        b":",
        b",",
        b"\"publish\"",
        b"\"channel\"",
        b"\"c\"",
        b"[",
        b"]",
        b"\"\\u00",
        b"\xff",
    ];
    for _ in 0..3000 {
        let mut input = Vec::new();
        for _ in 0..(state % 12) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            input.extend_from_slice(pieces[(state % 12) as usize]);
        }
        let _ = parse(&mut input, &mut Buffers::default(), 128);
    }
}
