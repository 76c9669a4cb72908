//! Every error of the HTTP API is `{"error": "…"}`, whoever raised it.
//!
//! Handlers answer with [`ApiError`], but some refusals come from the
//! framework before a handler runs: axum's method router answers 405 with
//! an empty body, the body limit 413 in plain text. This layer, around
//! the `/api/` routes only (gRPC keeps its own status trailers, the UI its
//! pages), also refuses what would otherwise be read silently or by hyper:
//! a request line longer than [`MAX_URI`] (414), headers larger than
//! [`MAX_HEADERS`] in total (431), and a query parameter given twice (400:
//! `?tenant=a&tenant=b` was read last-wins). Beyond hyper's own hard
//! limits (a 64 KiB request target, about 400 KiB of HTTP/1.1 head) the
//! connection still gets hyper's bare status: no handler runs there.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http::{StatusCode, header};
use serde_json::json;

use super::ApiError;

/// Longest request target (path and query) the API reads.
pub const MAX_URI: usize = 8 << 10;
/// Largest total of header names and values the API reads.
pub const MAX_HEADERS: usize = 32 << 10;

/// The middleware (`axum::middleware::from_fn`).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/api/") {
        return next.run(req).await;
    }
    if let Some(refusal) = refuse(&req) {
        return refusal;
    }
    let method = req.method().clone();
    let http1 = req.version() < http::Version::HTTP_2;
    let response = next.run(req).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            match response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .filter(|a| !a.is_empty())
            {
                Some(allowed) => {
                    format!("method {method} is not allowed on {path:?} (allowed: {allowed})")
                }
                None => format!("method {method} is not allowed on {path:?}"),
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut replaced = (status, axum::Json(json!({ "error": message }))).into_response();
    if let Some(allow) = allow {
        replaced.headers_mut().insert(header::ALLOW, allow);
    }
    // The unread rest of a refused body makes the connection unusable:
    // tell an HTTP/1.1 client not to send the next request on it.
    if status == StatusCode::PAYLOAD_TOO_LARGE && http1 {
        replaced
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    replaced
}

/// 414, 431 or 400 for a request the API will not read.
fn refuse(req: &Request) -> Option<Response> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI {
        return Some(error(
            StatusCode::URI_TOO_LONG,
            &format!("request target is {target} bytes; at most {MAX_URI}"),
        ));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers > MAX_HEADERS {
        return Some(error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("request headers are {headers} bytes; at most {MAX_HEADERS}"),
        ));
    }
    let query = req.uri().query().unwrap_or("");
    let mut seen = std::collections::HashSet::new();
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if !seen.insert(name.clone()) {
            return Some(
                ApiError::BadParam {
                    name: name.into_owned(),
                    reason: "given more than once; give it once".into(),
                }
                .into_response(),
            );
        }
    }
    None
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
