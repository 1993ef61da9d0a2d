//! Identities: a JWT in, the connection's user id, expiry and permissions out. Pure: the time is
//! an argument (the `exp` check is made here, not by reading a clock in the JWT library).
//!
//! Claims: `sub` (the user id, 1–[`MAX_USER_LEN`] bytes), `exp` (required, Unix seconds), and
//! optionally `"wsedge":{"subscribe":[patterns],"publish":[patterns]}`, which replaces the
//! configured default permissions for this connection.

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::topic;

/// Longest user id (`sub`) accepted, in bytes.
pub const MAX_USER_LEN: usize = 256;
/// Most patterns a token's `wsedge.subscribe` or `wsedge.publish` may list.
pub const MAX_TOKEN_PATTERNS: usize = 64;

/// The key tokens are signed with.
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    /// A shared secret (HS256).
    Hs256(Vec<u8>),
    /// A public key in PEM, RSA (RS256) or EC P-256 (ES256).
    PublicPem(Vec<u8>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret never reaches a log.
        f.write_str(match self {
            Key::Hs256(_) => "Key::Hs256(..)",
            Key::PublicPem(_) => "Key::PublicPem(..)",
        })
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("not an RSA or EC (P-256) public key in PEM: {0}")]
pub struct KeyError(String);

/// Why a token is refused; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

/// What a connection may subscribe and publish to: patterns (see [`crate::topic`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    subscribe: Vec<Box<str>>,
    publish: Vec<Box<str>>,
}

impl Permissions {
    /// Permissions from (checked) pattern lists.
    pub fn new(subscribe: Vec<Box<str>>, publish: Vec<Box<str>>) -> Self {
        Permissions { subscribe, publish }
    }

    /// Everything (`>`), both ways.
    pub fn all() -> Self {
        Permissions::new(vec![">".into()], vec![">".into()])
    }

    /// Whether a subscription to `name` (a channel or a pattern) is allowed: some allowed
    /// pattern covers every channel it matches.
    pub fn may_subscribe(&self, name: &str) -> bool {
        self.subscribe.iter().any(|p| topic::covers(p, name))
    }

    /// Whether publishing (or sending) to `channel` is allowed.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| topic::matches(p, channel))
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user: Box<str>,
    /// Unix seconds.
    pub expires_at: u64,
    /// The token's own permissions, if it carries a `wsedge` claim.
    pub permissions: Option<Arc<Permissions>>,
}

/// Checks tokens against one key, and optionally an issuer and an audience.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    wsedge: Option<RawPermissions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

impl Verifier {
    pub fn new(key: Key, issuer: Option<&str>, audience: Option<&str>) -> Result<Self, KeyError> {
        let (key, algorithm) = match key {
            Key::Hs256(secret) => (DecodingKey::from_secret(&secret), Algorithm::HS256),
            Key::PublicPem(pem) => match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (key, Algorithm::RS256),
                Err(rsa) => match DecodingKey::from_ec_pem(&pem) {
                    Ok(key) => (key, Algorithm::ES256),
                    Err(ec) => return Err(KeyError(format!("as RSA: {rsa}; as EC: {ec}"))),
                },
            },
        };
        let mut validation = Validation::new(algorithm);
        // `exp` is checked in `verify` against the time passed in, and required there.
        validation.validate_exp = false;
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        match issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Verifier { key, validation })
    }

    /// Verifies `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| TokenError(describe(e.kind(), &self.validation)))?;
        let claims = data.claims;
        let user = match claims.sub {
            Some(serde_json::Value::String(sub)) if (1..=MAX_USER_LEN).contains(&sub.len()) => sub,
            Some(_) => {
                return Err(TokenError(format!(
                    "sub must be a string of 1-{MAX_USER_LEN} bytes"
                )))
            }
            None => return Err(TokenError("the token has no sub claim".into())),
        };
        let expires_at = match claims.exp.as_ref().and_then(serde_json::Value::as_u64) {
            Some(exp) if exp > now => exp,
            Some(_) => return Err(TokenError("the token has expired".into())),
            None => {
                return Err(TokenError(
                    "the token has no exp claim (Unix seconds)".into(),
                ))
            }
        };
        let permissions = claims.wsedge.map(permissions).transpose()?;
        Ok(Claims {
            user: user.into(),
            expires_at,
            permissions: permissions.map(Arc::new),
        })
    }
}

fn permissions(raw: RawPermissions) -> Result<Permissions, TokenError> {
    let list = |name: &str, patterns: Vec<String>| {
        if patterns.len() > MAX_TOKEN_PATTERNS {
            return Err(TokenError(format!(
                "wsedge.{name} lists more than {MAX_TOKEN_PATTERNS} patterns"
            )));
        }
        patterns
            .into_iter()
            .map(|p| match topic::check_pattern(&p) {
                Ok(()) => Ok(p.into_boxed_str()),
                Err(why) => Err(TokenError(format!("wsedge.{name}: {p:?} {why}"))),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Permissions::new(
        list("subscribe", raw.subscribe)?,
        list("publish", raw.publish)?,
    ))
}

fn describe(kind: &ErrorKind, validation: &Validation) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => format!(
            "the token's algorithm is not the server's ({:?})",
            validation.algorithms
        ),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".into(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".into(),
        ErrorKind::Json(e) => format!("the token's claims are not valid JSON claims: {e}"),
        _ => "not a well-formed JWT (header.payload.signature)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        Verifier::new(Key::Hs256(SECRET.to_vec()), issuer, audience).unwrap()
    }

    #[test]
    fn a_good_token_gives_the_user_expiry_and_permissions() {
        let t = token(json!({"sub":"alice","exp":NOW + 60,
            "wsedge":{"subscribe":["news.>"],"publish":["chat.*"]}}));
        let claims = verifier(None, None).verify(&t, NOW).unwrap();
        assert_eq!((&*claims.user, claims.expires_at), ("alice", NOW + 60));
        let perms = claims.permissions.unwrap();
        assert!(perms.may_subscribe("news.*") && perms.may_subscribe("news.eu"));
        assert!(!perms.may_subscribe("chat.x") && !perms.may_subscribe(">"));
        assert!(perms.may_publish("chat.x") && !perms.may_publish("news.eu"));
        let plain = token(json!({"sub":"bob","exp":NOW + 1}));
        assert_eq!(
            verifier(None, None)
                .verify(&plain, NOW)
                .unwrap()
                .permissions,
            None
        );
    }

    #[test]
    fn an_es256_public_key_verifies_tokens_of_its_private_key_only() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let public = pair.public_key_pem().into_bytes();
        let v = Verifier::new(Key::PublicPem(public), None, None).unwrap();
        let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let claims = json!({"sub":"agent-7","exp":NOW + 5});
        let t = encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        assert_eq!(&*v.verify(&t, NOW).unwrap().user, "agent-7");
        // An HS256 token signed with the public key's bytes (the classic confusion) fails.
        assert!(v.verify(&token(claims), NOW).is_err());
        assert!(Verifier::new(Key::PublicPem(b"not a key".to_vec()), None, None).is_err());
    }

    #[test]
    fn every_bad_token_is_refused_with_a_reason() {
        let v = verifier(Some("issuer"), Some("wsedge"));
        let good = json!({"sub":"a","exp":NOW + 60,"iss":"issuer","aud":"wsedge"});
        assert!(v.verify(&token(good.clone()), NOW).is_ok());
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = good.clone();
            claims[key] = value;
            v.verify(&token(claims), NOW).unwrap_err().to_string()
        };
        assert!(with("exp", json!(NOW)).contains("expired"));
        assert!(with("iss", json!("other")).contains("issuer"));
        assert!(with("aud", json!("other")).contains("audience"));
        assert!(with("sub", json!(7)).contains("sub"));
        assert!(with("sub", json!("")).contains("sub"));
        assert!(with("wsedge", json!({"subscribe":["a.>.b"]})).contains("wsedge.subscribe"));
        let mut no_sub = good.clone();
        no_sub.as_object_mut().unwrap().remove("sub");
        assert!(v
            .verify(&token(no_sub), NOW)
            .unwrap_err()
            .to_string()
            .contains("no sub"));
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(v
            .verify(&token(no_exp), NOW)
            .unwrap_err()
            .to_string()
            .contains("no exp"));
        let other_key = encode(
            &Header::default(),
            &good,
            &EncodingKey::from_secret(b"another secret, also 32 bytes!!!"),
        )
        .unwrap();
        assert_eq!(
            v.verify(&other_key, NOW).unwrap_err().to_string(),
            "bad signature"
        );
        for garbage in ["", "a.b", "a.b.c", "....", &"x".repeat(10_000)] {
            assert!(v.verify(garbage, NOW).is_err());
        }
        // `alg: none` and a different algorithm are refused.
        let none = format!(
            "eyJhbGciOiJub25lIn0.{}.",
            token(good.clone()).split('.').nth(1).unwrap()
        );
        assert!(v.verify(&none, NOW).is_err());
    }
}
