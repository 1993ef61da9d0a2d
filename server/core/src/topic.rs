//! Channel names and subscription patterns.
//!
//! A channel name is 1–128 bytes of `[A-Za-z0-9_.:-]`; its dot-separated parts are tokens. A
//! pattern is a name where a whole token may be `*` (exactly one token) or, as the last token
//! only, `>` (one or more tokens), with NATS semantics: `news.*` matches `news.eu` but not
//! `news.eu.fr`; `news.>` matches both, and not `news`.

use crate::protocol::MAX_CHANNEL_LEN;

/// Why a channel name or pattern is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    #[error("must be 1-{MAX_CHANNEL_LEN} bytes of [A-Za-z0-9_.:-]")]
    Syntax,
    #[error("wildcards `*` and `>` are for subscribing; a message goes to one concrete channel")]
    Wildcard,
    #[error("`*` and `>` must be whole tokens (between dots), and `>` only the last one")]
    Misplaced,
}

/// Checks a channel name a message is published to: no wildcards.
pub fn check_channel(name: &str) -> Result<(), BadName> {
    check_pattern(name)?;
    if is_pattern(name) {
        return Err(BadName::Wildcard);
    }
    Ok(())
}

/// Checks a name a connection subscribes to: a channel name or a pattern.
pub fn check_pattern(name: &str) -> Result<(), BadName> {
    let syntax = (1..=MAX_CHANNEL_LEN).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'*' | b'>')
        });
    if !syntax {
        return Err(BadName::Syntax);
    }
    if !name.contains(['*', '>']) {
        return Ok(());
    }
    let mut tokens = name.split('.').peekable();
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        let whole = match token {
            "*" => true,
            ">" => last,
            _ => !token.contains(['*', '>']),
        };
        if !whole {
            return Err(BadName::Misplaced);
        }
    }
    Ok(())
}

/// Whether a (checked) name is a pattern.
pub fn is_pattern(name: &str) -> bool {
    name.split('.').any(|t| t == "*" || t == ">")
}

/// Whether the (checked) pattern `pattern` matches the channel `channel`.
pub fn matches(pattern: &str, channel: &str) -> bool {
    let mut channel_tokens = channel.split('.');
    for token in pattern.split('.') {
        match (token, channel_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (literal, Some(given)) if literal == given => {}
            _ => return false,
        }
    }
    channel_tokens.next().is_none()
}

/// Whether every channel that `inner` matches, `outer` matches too (both checked patterns or
/// names): what a permission `outer` allows a subscription `inner`.
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut inner_tokens = inner.split('.');
    for token in outer.split('.') {
        match (token, inner_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(given)) if given != ">" => {}
            (literal, Some(given)) if literal == given && given != "*" && given != ">" => {}
            _ => return false,
        }
    }
    inner_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns_are_checked() {
        for ok in [
            "a",
            "news.eu",
            "a:b-c_d.e",
            "*",
            ">",
            "news.*",
            "news.>",
            "*.eu.>",
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", BadName::Syntax),
            ("a b", BadName::Syntax),
            ("news*", BadName::Misplaced),
            ("news.>.eu", BadName::Misplaced),
            ("a.>>", BadName::Misplaced),
            ("*x.y", BadName::Misplaced),
        ] {
            assert_eq!(check_pattern(bad), Err(why), "{bad}");
        }
        assert_eq!(check_channel("news.*"), Err(BadName::Wildcard));
        assert_eq!(check_channel(">"), Err(BadName::Wildcard));
        assert_eq!(check_channel("news.eu"), Ok(()));
        assert_eq!(
            check_channel(&"c".repeat(MAX_CHANNEL_LEN + 1)),
            Err(BadName::Syntax)
        );
    }

    #[test]
    fn matching_follows_nats() {
        let table = [
            ("news.*", "news.eu", true),
            ("news.*", "news.eu.fr", false),
            ("news.*", "news", false),
            ("news.>", "news.eu", true),
            ("news.>", "news.eu.fr", true),
            ("news.>", "news", false),
            (">", "anything.at.all", true),
            ("*", "one", true),
            ("*", "one.two", false),
            ("*.eu", "news.eu", true),
            ("*.eu", "news.us", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.b.d", false),
            ("news.eu", "news.eu", true),
            ("news.eu", "news.eu.fr", false),
            ("news.eu.fr", "news.eu", false),
        ];
        for (pattern, channel, expected) in table {
            assert_eq!(matches(pattern, channel), expected, "{pattern} ~ {channel}");
        }
    }

    #[test]
    fn a_permission_covers_what_it_matches() {
        let table = [
            (">", "news.*", true),
            (">", "x", true),
            ("news.>", "news.*", true),
            ("news.>", "news.>", true),
            ("news.>", "news", false),
            ("news.>", ">", false),
            ("news.*", "news.eu", true),
            ("news.*", "news.*", true),
            ("news.*", "news.>", false),
            ("news.eu", "news.*", false),
            ("news.eu", "news.eu", true),
            ("*.eu", "news.eu", true),
            ("*", ">", false),
        ];
        for (outer, inner, expected) in table {
            assert_eq!(covers(outer, inner), expected, "{outer} covers {inner}");
        }
    }
}
