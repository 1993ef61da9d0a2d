//! The browser client, served by the server itself: `GET /client/wsedge.js` (the ES module,
//! `server/client/wsedge.js`, embedded in the binary), `GET /client/wsedge.d.ts` (its types)
//! and `GET /client/example` (a small live chat page using it).

use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};

use super::response::{error, Body};

const MODULE: &str = include_str!("../../client/wsedge.js");
const TYPES: &str = include_str!("../../client/wsedge.d.ts");
const EXAMPLE: &str = include_str!("../../client/example.html");

/// The paths served here.
pub const PATHS: [&str; 3] = [
    "/client/wsedge.js",
    "/client/wsedge.d.ts",
    "/client/example",
];

/// One of [`PATHS`] (404 for any other path).
pub fn serve(path: &str) -> Response<Body> {
    let (body, content_type) = match path {
        "/client/wsedge.js" => (MODULE, "text/javascript; charset=utf-8"),
        "/client/wsedge.d.ts" => (TYPES, "application/typescript; charset=utf-8"),
        "/client/example" => (EXAMPLE, "text/html; charset=utf-8"),
        _ => return error(StatusCode::NOT_FOUND, "not_found", "no such client file"),
    };
    let mut response = Response::new(Body::new(body.into()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if path == "/client/example" {
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        );
    } else {
        // A page on another origin may import the module (module scripts are fetched with CORS).
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    response
}
