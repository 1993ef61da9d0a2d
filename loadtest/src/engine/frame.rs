//! Reading the frames a run receives. Nearly all are the server's `message` and `echo` frames
//! around the flat `data` object loadtest wrote (`{"p":..,"s":..,"t":..,"a":..,"pad":"xx.."}`):
//! a scanner reads those without a general JSON parser (which took half of the client's CPU on
//! fan-out, mostly skipping the padding). Anything else, or anything the scanner is unsure of,
//! goes to `serde_json`, so an unexpected frame is never misread, only read more slowly.

use std::borrow::Cow;

/// A server frame as the reader needs it (other fields are skipped).
#[derive(serde::Deserialize, Debug, PartialEq)]
pub(super) struct Reply<'a> {
    #[serde(borrow)]
    pub(super) op: Option<Cow<'a, str>>,
    pub(super) data: Option<Data>,
    #[serde(borrow)]
    pub(super) code: Option<Cow<'a, str>>,
    /// Set on direct messages.
    #[serde(borrow)]
    pub(super) user: Option<Cow<'a, str>>,
}

/// The `data` loadtest sends: publisher, sequence number, intended and actual send time (µs).
#[derive(serde::Deserialize, Default, Debug, PartialEq)]
pub(super) struct Data {
    pub(super) p: Option<u64>,
    pub(super) s: Option<u64>,
    pub(super) t: Option<u64>,
    pub(super) a: Option<u64>,
}

/// A wsedge frame.
pub(super) fn reply(text: &[u8]) -> serde_json::Result<Reply<'_>> {
    match scan_reply(text) {
        Some(reply) => Ok(reply),
        None => serde_json::from_slice(text),
    }
}

/// A bare `data` object (raw mode: a plain peer sends back what it got).
pub(super) fn data(text: &[u8]) -> serde_json::Result<Data> {
    match scan_data(text) {
        Some((data, [])) => Ok(data),
        _ => serde_json::from_slice(text),
    }
}

/// `{"op":"message"|"echo",...,"data":{<flat data>}...}` with no `user` or `code` before the
/// data; `None` for anything else.
fn scan_reply(text: &[u8]) -> Option<Reply<'_>> {
    let rest = text.strip_prefix(br#"{"op":""#)?;
    let end = string_end(rest)?;
    let op = std::str::from_utf8(&rest[..end]).ok()?;
    if op != "message" && op != "echo" {
        return None;
    }
    let at = find(rest, br#","data":{"#)?;
    let head = &rest[..at];
    if find(head, br#""user":"#).is_some() || find(head, br#""code":"#).is_some() {
        return None;
    }
    let (data, tail) = scan_data(&rest[at + br#","data":"#.len()..])?;
    // After the data only `"ref":<n or "s">` (an echo) or nothing may follow.
    if !(tail == b"}" || tail.starts_with(br#","ref":"#) && tail.ends_with(b"}")) {
        return None;
    }
    Some(Reply {
        op: Some(Cow::Borrowed(op)),
        data: Some(data),
        code: None,
        user: None,
    })
}

/// A flat object of unsigned integers and escape-free strings, in any key order; the `p`,
/// `s`, `t` and `a` integers taken. Returns it and the text after it.
fn scan_data(text: &[u8]) -> Option<(Data, &[u8])> {
    let mut data = Data::default();
    let mut rest = text.strip_prefix(b"{")?;
    if let Some(after) = rest.strip_prefix(b"}") {
        return Some((data, after));
    }
    loop {
        rest = rest.strip_prefix(b"\"")?;
        let end = string_end(rest)?;
        let key = &rest[..end];
        rest = rest[end..].strip_prefix(b"\":")?;
        match rest.first()? {
            b'0'..=b'9' => {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if digits > 19 {
                    return None;
                }
                let n: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
                rest = &rest[digits..];
                match key {
                    b"p" => data.p = Some(n),
                    b"s" => data.s = Some(n),
                    b"t" => data.t = Some(n),
                    b"a" => data.a = Some(n),
                    _ => {}
                }
            }
            b'"' => {
                let body = &rest[1..];
                let end = string_end(body)?;
                if body[end] == b'\\' || !matches!(key, b"pad") {
                    return None;
                }
                rest = &body[end + 1..];
            }
            _ => return None,
        }
        match rest.first()? {
            b',' => rest = &rest[1..],
            b'}' => return Some((data, &rest[1..])),
            _ => return None,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Where a string's body ends: its closing quote or a backslash (which the scanner declines).
fn string_end(body: &[u8]) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame reads the same through the scanner as through serde_json, or is left to it.
    #[test]
    fn the_scanner_agrees_with_serde_json_and_leaves_it_the_rest() {
        let frames: [&[u8]; 10] = [
            br#"{"op":"message","channel":"loadtest.fanout","id":"0-1","priority":"normal","data":{"p":3,"s":41,"t":1000,"a":1002,"pad":"xxxx"}}"#,
            br#"{"op":"echo","data":{"t":5,"a":6,"pad":""},"ref":17}"#,
            br#"{"op":"echo","data":{"pad":"x","a":6,"t":5},"ref":"s"}"#,
            br#"{"op":"message","channel":"c","id":"1","priority":"high","offset":3,"epoch":"e","data":{"p":1,"s":2,"t":3}}"#,
            br#"{"op":"message","user":"agent-0-1","id":"1","data":{"p":1,"s":2,"t":3}}"#,
            br#"{"op":"error","ref":"s","code":"rate_limited","message":"slow down"}"#,
            br#"{"op":"message","channel":"c","id":"1","priority":"normal","data":{"p":1,"pad":"a\"b"}}"#,
            br#"{"op":"message","channel":"c","id":"1","priority":"normal","data":{"p":-1}}"#,
            br#"{"op":"echo","data":{"t":99999999999999999999},"ref":1}"#,
            br#"{"op":"ok","ref":"s"}"#,
        ];
        for (i, f) in frames.iter().enumerate() {
            let slow: Result<Reply<'_>, _> = serde_json::from_slice(f);
            match (scan_reply(f), slow) {
                (Some(fast), Ok(slow)) => assert_eq!(fast, slow, "frame {i}"),
                (Some(fast), Err(e)) => panic!("frame {i}: scanned {fast:?}, serde says {e}"),
                (None, _) => assert!(i >= 4, "frame {i} should take the fast path"),
            }
        }
        assert_eq!(reply(frames[4]).unwrap().user.as_deref(), Some("agent-0-1"));
        assert_eq!(
            reply(frames[5]).unwrap().code.as_deref(),
            Some("rate_limited")
        );
        assert!(reply(br#"{"op":"message","data":{"p":1"#).is_err());
    }

    #[test]
    fn a_bare_data_object_is_scanned_whole() {
        let d = data(br#"{"p":1,"s":2,"t":3,"a":4,"pad":"xx"}"#).unwrap();
        assert_eq!((d.p, d.s, d.t, d.a), (Some(1), Some(2), Some(3), Some(4)));
        assert_eq!(data(br#"{"ref":3,"t":9,"pad":""}"#).unwrap().t, Some(9));
        assert!(data(br#"{"t":9} trailing"#).is_err());
        assert!(data(b"{}").is_ok());
    }
}
