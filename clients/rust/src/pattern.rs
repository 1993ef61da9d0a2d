//! Subject patterns: NATS `*` (one token) and `>` (the rest), as the server matches them.

/// Whether subscription `pattern` (NATS `*` and `>`) matches `channel`.
pub fn matches(pattern: &str, channel: &str) -> bool {
    let mut p = pattern.split('.').peekable();
    let mut c = channel.split('.');
    while let Some(token) = p.next() {
        if token == ">" {
            return p.peek().is_none() && c.next().is_some();
        }
        match c.next() {
            Some(t) if token == "*" || token == t => {}
            _ => return false,
        }
    }
    c.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_as_the_server_does() {
        assert!(matches("news", "news"));
        assert!(matches("news.*", "news.eu"));
        assert!(!matches("news.*", "news.eu.fr"));
        assert!(matches("news.>", "news.eu.fr"));
        assert!(!matches("news.>", "news"));
        assert!(!matches("news", "news.eu"));
        assert!(matches("*.eu", "news.eu"));
    }
}
