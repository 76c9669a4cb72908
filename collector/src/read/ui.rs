//! The web UI: one page of plain HTML, CSS and JavaScript embedded in the
//! binary (no build step, no Node.js to run it), served on the mTLS
//! listener under the same client-certificate rules as the API it calls.
//!
//! - Pages are client-side routes (`/`, `/prefixes/A.B.C.0/24`,
//!   `/address/IP`, `/agents`, `/outages`, `/events`, `/alerts`,
//!   `/targets`, `/checks`); the server answers each with the page, except a prefix
//!   the certificate is not granted, which is a 403 that names nothing of
//!   it. Assets live under `/ui/`.
//! - Every UI and API response carries a strict Content-Security-Policy
//!   (scripts, styles and connections from this origin only, no inline
//!   script, no framing), `X-Frame-Options: DENY`, `nosniff`,
//!   `Referrer-Policy: no-referrer` and same-origin isolation headers.
//! - A browser presents its client certificate to any site that makes it
//!   send a request here, so changes through the API are guarded against
//!   cross-site requests ([`guard_changes`]): a `POST`/`PUT`/`DELETE` must
//!   carry `Content-Type: application/json` (a cross-site form cannot, and
//!   a cross-site script cannot without a CORS preflight, which is never
//!   granted) and, when the browser sends an `Origin`, it must be this
//!   host.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::Shared;
use crate::consumers::alert::message::esc;
use crate::ingest::peer::Peer;
use crate::read::access::Access;

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");
const ICON: &str = include_str!("../../ui/icon.svg");

/// Everything served over HTTP on the mTLS listener: the API (changes
/// guarded against cross-site requests) and the UI, all with the security
/// headers.
pub(crate) fn http(shared: &Arc<Shared>) -> Router {
    crate::read::api::router(shared.clone())
        .layer(axum::middleware::from_fn(guard_changes))
        .merge(router(shared.clone()))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The page and asset routes.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/agents", get(page))
        .route("/agents/{name}", get(page))
        .route("/outages", get(page))
        .route("/events", get(page))
        .route("/alerts", get(page))
        .route("/targets", get(page))
        .route("/checks", get(page))
        .route("/address/{ip}", get(page))
        .route("/prefixes/{addr}/{len}", get(prefix_page))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .with_state(shared)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The page, to anyone who may view.
async fn page(State(shared): State<Arc<Shared>>, Extension(peer): Extension<Peer>) -> Response {
    match Access::of(&shared.settings.borrow(), &peer.identity) {
        Ok(_) => html(StatusCode::OK, INDEX),
        Err(e) => refused(&e.to_string()),
    }
}

/// A prefix page: 403 unless part of the prefix is granted.
async fn prefix_page(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path((addr, len)): Path<(String, String)>,
) -> Response {
    let access = match Access::of(&shared.settings.borrow(), &peer.identity) {
        Ok(a) => a,
        Err(e) => return refused(&e.to_string()),
    };
    match crate::read::query::parse_prefix(&format!("{addr}/{len}")) {
        Ok(p) if crate::read::query::may_view_prefix(&shared.analysis.read(), &access, &p) => {
            html(StatusCode::OK, INDEX)
        }
        Ok(p) => {
            tracing::warn!(peer = %peer.identity, prefix = %p, "prefix page refused: not granted");
            refused("this prefix is not granted to your tenant")
        }
        Err(e) => html(
            StatusCode::BAD_REQUEST,
            &error_page("Bad prefix", &e.to_string()),
        ),
    }
}

fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_owned(),
    )
        .into_response()
}

fn refused(why: &str) -> Response {
    html(StatusCode::FORBIDDEN, &error_page("403 Forbidden", why))
}

fn error_page(title: &str, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · sonde</title>\
         <link rel=\"stylesheet\" href=\"/ui/app.css\"></head><body><main class=\"refused\">\
         <h1>{t}</h1><p>{m}</p><p><a href=\"/\">Back to the grids</a></p></main></body></html>",
        t = esc(title),
        m = esc(message)
    )
}

/// Adds the security headers to every response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// Refuses changes that a cross-site page could have made the browser
/// send (see the module docs).
async fn guard_changes(req: Request, next: Next) -> Response {
    let changes = matches!(*req.method(), Method::POST | Method::PUT | Method::DELETE);
    if changes && let Err(why) = same_origin_json(&req) {
        let body = axum::Json(serde_json::json!({ "error": why }));
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    next.run(req).await
}

fn same_origin_json(req: &Request) -> Result<(), String> {
    let headers = req.headers();
    if *req.method() != Method::DELETE {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err("changes must be sent as Content-Type: application/json".into());
        }
    }
    // A browser sends one Origin; several are a forgery that a check of
    // the first alone would let through.
    if headers.get_all(header::ORIGIN).iter().count() > 1 {
        return Err("cross-origin change refused (more than one Origin header)".into());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(&host));
        if !ok {
            return Err(format!(
                "cross-origin change refused (Origin {:?} is not this collector)",
                origin.to_str().unwrap_or("?")
            ));
        }
    }
    Ok(())
}
