//! Who a `GET /ws` (or `/echo`) request is, checked before the upgrade so that a refused request
//! costs no shard resources: a JWT from the `token` query parameter (browsers cannot set
//! headers) or an `Authorization: Bearer` header (agents), verified against `[auth]`.

use hyper::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};

use super::response::{error, Body};
use crate::conn::{unix_now, Identity};
use crate::shard::Shard;

/// Why a request is refused (401).
#[derive(Debug)]
pub(super) struct Unauthorized {
    code: &'static str,
    message: String,
}

impl Unauthorized {
    /// The 401 answer: `{"error":<code>,"message":...}` and `WWW-Authenticate: Bearer`.
    pub(super) fn response(&self) -> Response<Body> {
        tracing::debug!(code = self.code, "authentication refused: {}", self.message);
        let mut response = error(StatusCode::UNAUTHORIZED, self.code, &self.message);
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// The request's identity, or why it is refused.
pub(super) fn authenticate<B>(req: &Request<B>, shard: &Shard) -> Result<Identity, Unauthorized> {
    let auth = &shard.config().auth;
    let Some(token) = token(req) else {
        if auth.anonymous {
            return Ok(Identity {
                user: None,
                expires_at: None,
                permissions: auth.anonymous_permissions.clone(),
                api: false,
            });
        }
        let text = "this server needs a token: ?token=<JWT> or Authorization: Bearer <JWT>";
        return Err(unauthorized("token_required", text));
    };
    let Some(verifier) = &shard.shared().verifier else {
        let text = "this server has no key to check tokens ([auth]); connect without one";
        return Err(unauthorized("invalid_token", text));
    };
    match verifier.verify(token, unix_now()) {
        Ok(claims) => Ok(Identity {
            user: Some(claims.user.into()),
            expires_at: Some(claims.expires_at),
            permissions: claims
                .permissions
                .unwrap_or_else(|| auth.permissions.clone()),
            api: false,
        }),
        Err(e) => Err(unauthorized("invalid_token", &e.to_string())),
    }
}

/// The token: the `Authorization: Bearer` header, else the `token` query parameter.
fn token<B>(req: &Request<B>) -> Option<&str> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(value) = header {
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(token.trim());
        }
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

fn unauthorized(code: &'static str, message: &str) -> Unauthorized {
    Unauthorized {
        code,
        message: message.to_string(),
    }
}
