//! A linear, non-recursive look at request JSON before simd-json builds a value from it.
//!
//! simd-json builds values (and drops and writes them) recursively, so a message of deeply nested
//! arrays or objects (about 10,000 levels fit in 20 KB) would overflow a shard thread's stack and
//! abort the process. And it turns a lone UTF-16 surrogate escape (`"\ud800"`) into U+0000 rather
//! than rejecting it. [`check`] finds both in one pass with a constant amount of state, so that
//! they are answered `invalid_json` instead.
//!
//! Everything else (syntax, numbers, bad escapes) is left to simd-json: on malformed input this
//! check may pass or stop early, but never says "too deep" or "lone surrogate" falsely for valid
//! JSON.

/// Why a message was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonProblem {
    #[error("JSON nested deeper than protocol.max_json_depth ({limit})")]
    TooDeep { limit: usize },
    #[error("lone UTF-16 surrogate escape at byte {at}")]
    LoneSurrogate { at: usize },
}

/// Checks nesting depth (arrays and objects, at most `max_depth` levels) and surrogate escapes.
pub fn check(input: &[u8], max_depth: usize) -> Result<(), JsonProblem> {
    // Nesting deeper than `max_depth` needs more than `max_depth` bytes, and a surrogate escape
    // needs a backslash: short messages without one (nearly all) are not scanned.
    if input.len() <= max_depth && memchr::memchr(b'\\', input).is_none() {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'"' => i = skip_string(input, i + 1)?,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(JsonProblem::TooDeep { limit: max_depth });
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Skips a string whose contents start at `i`; returns the index after its closing quote (or the
/// end of input when it has none: simd-json rejects that).
fn skip_string(input: &[u8], mut i: usize) -> Result<usize, JsonProblem> {
    loop {
        let rest = input.get(i..).unwrap_or_default();
        let Some(offset) = memchr::memchr2(b'"', b'\\', rest) else {
            return Ok(input.len());
        };
        i += offset;
        if input[i] == b'"' {
            return Ok(i + 1);
        }
        // A backslash: `\uXXXX` is checked for surrogates, any other escape is two bytes.
        if input.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        match hex4(input, i + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = (input.get(i + 6..i + 8) == Some(b"\\u"))
                    .then(|| hex4(input, i + 8))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return Err(JsonProblem::LoneSurrogate { at: i });
                }
                i += 12;
            }
            Some(0xDC00..=0xDFFF) => return Err(JsonProblem::LoneSurrogate { at: i }),
            _ => i += 2,
        }
    }
}

/// The value of four hex digits at `at`, if there are four.
fn hex4(input: &[u8], at: usize) -> Option<u32> {
    let digits = input.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert_eq!(check(br#"{"a":[[1]]}"#, 3), Ok(()));
        assert_eq!(
            check(br#"{"a":[[[1]]]}"#, 3),
            Err(JsonProblem::TooDeep { limit: 3 })
        );
        let in_string = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert_eq!(check(in_string.as_bytes(), 2), Ok(()));
        // Siblings do not add up.
        let wide = format!("[{}]", ["[[1]]"; 1000].join(","));
        assert_eq!(check(wide.as_bytes(), 3), Ok(()));
    }

    #[test]
    fn deep_nesting_of_any_kind_is_refused_without_recursion() {
        for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
            let deep = format!("{}1{}", open.repeat(1_000_000), close.repeat(1_000_000));
            assert!(matches!(
                check(deep.as_bytes(), 128),
                Err(JsonProblem::TooDeep { .. })
            ));
        }
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_pass() {
        assert_eq!(check(br#"["\ud83d\ude00"]"#, 8), Ok(()));
        assert_eq!(check(br#"["\uD83D\uDE00"]"#, 8), Ok(()));
        assert_eq!(
            check(br#"["\u00e9\\ud800"]"#, 8),
            Ok(()),
            "an escaped backslash"
        );
        for bad in [
            r#"["\ud800"]"#,
            r#"["\udc00"]"#,
            r#"["\ud800\u0041"]"#,
            r#"["\ud800x"]"#,
            r#"{"\ud800":1}"#,
            r#"["\ud800"#,
        ] {
            assert!(
                matches!(
                    check(bad.as_bytes(), 8),
                    Err(JsonProblem::LoneSurrogate { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn truncated_input_never_panics() {
        let text = br#"{"a":["\ud83d\ude00",{"b":"\\\"x"}],"c":"\u12"#;
        for end in 0..=text.len() {
            let _ = check(&text[..end], 1);
        }
        // Found by fuzz/parse_envelope: a string ending in a lone backslash.
        assert_eq!(check(b"\"\0x\nx[\\", 1), Ok(()));
    }
}
