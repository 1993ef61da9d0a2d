//! What the API's routes share: answers, the time they wait, query decoding, the store.

use std::time::Duration;

use hyper::{Response, StatusCode};
use tokio::sync::oneshot;

use crate::http::response::{error, Body};
use crate::shard::Shard;
use crate::store::DeadLetters as Query;

/// How long a request waits for the store, another shard, or its answer.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A refusal answered as it is (boxed: a response is large).
pub(super) type Refused = Box<Response<Body>>;

/// A 400 answer.
pub(super) fn bad_request(code: &str, text: &str) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, code, text)
}

/// Asks the store, waiting at most [`ANSWER_TIMEOUT`].
pub(super) async fn ask<T>(
    shard: &Shard,
    query: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Query,
) -> Result<T, Refused> {
    let (tx, rx) = oneshot::channel();
    shard.shared().store.query(query(tx));
    let unavailable =
        |text: &str| error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", text);
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(e))) => Err(Box::new(unavailable(&e))),
        _ => Err(Box::new(unavailable("the store did not answer in time"))),
    }
}

/// `%XX` escapes and `+` decoded; invalid escapes are kept as they are.
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("user%3Abob+x"), "user:bob x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
