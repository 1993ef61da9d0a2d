//! Identities over real sockets: JWTs checked before the upgrade (401 with a reason), the user in
//! `welcome`, permissions (`forbidden`), `refresh`, and close 4001 when a token expires.

mod support;

use anyhow::Result;
use serde_json::{json, Value};
use support::{raw_request, unix_now, upgrade_request, Client, TestServer, SECRET};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const ISSUER: &str = "wsedge-tests";

fn token_with(claims: Value, secret: &str) -> String {
    support::sign(&claims, secret)
}

/// A token for `user`, valid for `seconds`, with `extra` claims merged in.
fn token(user: &str, seconds: u64, extra: Value) -> String {
    let mut claims = json!({"sub": user, "exp": unix_now() + seconds, "iss": ISSUER});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    token_with(claims, SECRET)
}

async fn server(anonymous: bool) -> Result<TestServer> {
    let anonymous = anonymous.to_string();
    TestServer::start(&[
        ("SERVER_SHARDS", "2"),
        ("AUTH_HS256_SECRET", SECRET),
        ("AUTH_ISSUER", ISSUER),
        ("AUTH_ANONYMOUS", &anonymous),
        ("AUTH_ANONYMOUS_SUBSCRIBE", r#"["public.>"]"#),
        ("AUTH_ANONYMOUS_PUBLISH", "[]"),
    ])
    .await
}

async fn connect(server: &TestServer, token: &str) -> Result<Client> {
    Client::connect_with_token(server, token).await
}

#[tokio::test]
async fn a_request_without_a_good_token_gets_401_with_a_reason_and_no_connection() -> Result<()> {
    let server = server(false).await?;
    let cases = [
        (String::new(), "token_required", "token"),
        (
            token_with(
                json!({"sub":"a","exp":unix_now() + 60,"iss":ISSUER}),
                "another secret of 32 bytes or more",
            ),
            "invalid_token",
            "signature",
        ),
        (
            token("a", 0, json!({"exp": unix_now() - 1})),
            "invalid_token",
            "expired",
        ),
        (
            token("a", 60, json!({"iss": "someone else"})),
            "invalid_token",
            "issuer",
        ),
        (
            token_with(json!({"exp":unix_now() + 60,"iss":ISSUER}), SECRET),
            "invalid_token",
            "sub",
        ),
        ("not.a.jwt".into(), "invalid_token", "JWT"),
    ];
    for (token, code, words) in cases {
        let path = if token.is_empty() {
            "/ws".to_string()
        } else {
            format!("/ws?token={token}")
        };
        let (mut stream, head) = raw_request(&server, upgrade_request(&path).as_bytes()).await?;
        assert!(head.starts_with("HTTP/1.1 401 "), "{code}: {head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_string)
            })
            .unwrap()
            .trim()
            .parse()?;
        let mut body = vec![0; length];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut body).await?;
        let body: Value = serde_json::from_slice(&body)?;
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().unwrap().contains(words), "{body}");
    }
    assert_eq!(server.health().await?["connections"], 0);
    // A server with no key cannot check a token, so it refuses one rather than ignore it.
    let keyless = TestServer::start(&[]).await?;
    let path = format!("/ws?token={}", token("a", 60, json!({})));
    let (_, head) = raw_request(&keyless, upgrade_request(&path).as_bytes()).await?;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    Ok(())
}

#[tokio::test]
async fn welcome_names_the_user_of_a_query_or_bearer_token_and_null_when_anonymous() -> Result<()> {
    let server = server(true).await?;
    let by_query = connect(&server, &token("alice", 60, json!({}))).await?;
    assert_eq!(by_query.user, "alice");
    let mut request = server.url("/ws").into_client_request()?;
    let bearer = format!("Bearer {}", token("bob", 60, json!({})));
    request
        .headers_mut()
        .insert("Authorization", HeaderValue::from_str(&bearer)?);
    assert_eq!(Client::connect_request(request).await?.user, "bob");
    assert_eq!(Client::connect(&server).await?.user, Value::Null);
    Ok(())
}

#[tokio::test]
async fn what_a_token_or_anonymity_does_not_allow_is_forbidden_and_the_connection_stays_open(
) -> Result<()> {
    let server = server(true).await?;
    let perms = json!({"wsedge": {"subscribe": ["news.>"], "publish": ["chat.*"]}});
    let mut c = connect(&server, &token("carol", 60, perms)).await?;
    c.subscribe("news.*").await?;
    for request in [
        json!({"op": "subscribe", "channel": "sports", "ref": 1}),
        json!({"op": "subscribe", "channel": ">", "ref": 2}),
        json!({"op": "publish", "channel": "news.eu", "data": 1, "ref": 3}),
    ] {
        c.send(request.clone()).await?;
        let reply = c.recv_json().await?;
        assert_eq!(
            (reply["op"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{request} → {reply}"
        );
        assert_eq!(reply["ref"], request["ref"]);
    }
    c.request_ok(
        json!({"op": "publish", "channel": "chat.x", "data": 1}),
        "ok",
    )
    .await?;
    // Anonymous: [auth] anonymous_subscribe = ["public.>"], anonymous_publish = [].
    let mut anonymous = Client::connect(&server).await?;
    anonymous.subscribe("public.news").await?;
    anonymous
        .send(json!({"op": "publish", "channel": "public.news", "data": 1}))
        .await?;
    assert_eq!(anonymous.recv_json().await?["code"], "forbidden");
    anonymous
        .send(json!({"op": "subscribe", "channel": "private"}))
        .await?;
    assert_eq!(anonymous.recv_json().await?["code"], "forbidden");
    anonymous
        .request_ok(json!({"op": "ping"}), "still open")
        .await
        .ok();
    Ok(())
}

#[tokio::test]
async fn an_expired_token_closes_with_4001_and_a_refresh_keeps_the_connection() -> Result<()> {
    let server = server(true).await?;
    let mut expiring = connect(&server, &token("dave", 2, json!({}))).await?;
    let mut refreshed = connect(&server, &token("dave", 2, json!({}))).await?;
    // A refresh needs a good token of the same user.
    for (bad, words) in [
        (token("eve", 60, json!({})), "eve"),
        (token("dave", 60, json!({"iss": "x"})), "issuer"),
    ] {
        let mut other = connect(&server, &token("dave", 60, json!({}))).await?;
        other
            .send(json!({"op": "refresh", "token": bad, "ref": "bad"}))
            .await?;
        let reply = other.recv_json().await?;
        assert_eq!(reply["code"], "invalid_token", "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(words),
            "{reply}"
        );
    }
    let fresh = token("dave", 60, json!({}));
    refreshed
        .request_ok(json!({"op": "refresh", "token": fresh.clone()}), "r")
        .await?;
    // Checking signatures is costly: one refresh per second at most.
    refreshed
        .send(json!({"op": "refresh", "token": fresh, "ref": "again"}))
        .await?;
    assert_eq!(refreshed.recv_json().await?["code"], "rate_limited");
    let (code, reason) = expiring.expect_close().await?;
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    // The old token's expiry has passed too: the refreshed connection still answers.
    refreshed
        .request_ok(json!({"op": "subscribe", "channel": "after"}), "alive")
        .await?;
    // An anonymous connection cannot take a token.
    let mut anonymous = Client::connect(&server).await?;
    anonymous
        .send(json!({"op": "refresh", "token": token("dave", 60, json!({}))}))
        .await?;
    assert_eq!(anonymous.recv_json().await?["code"], "invalid_token");
    Ok(())
}

#[tokio::test]
async fn a_bad_auth_config_stops_the_start_naming_the_key() -> Result<()> {
    for (key, value, words) in [
        ("AUTH_HS256_SECRET", "short", "auth.hs256_secret"),
        ("AUTH_ANONYMOUS", "false", "auth.anonymous"),
        (
            "AUTH_PUBLIC_KEY_FILE",
            "/nonexistent.pem",
            "auth.public_key_file",
        ),
        ("AUTH_SUBSCRIBE", r#"["a.>.b"]"#, "auth.subscribe"),
    ] {
        let err = support::start_error(&[(key, value)]).await?;
        assert!(err.contains(words), "{key}: {err}");
    }
    Ok(())
}
