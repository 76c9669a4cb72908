//! The ping listener (`ping-listen`): Healthchecks' ping URLs, so that
//! existing scripts and clients work unchanged.
//!
//! | request | means |
//! | --- | --- |
//! | `GET`/`HEAD`/`POST /ping/<uuid>` | success |
//! | `/ping/<uuid>/start` | a run started (the next success or failure records its duration) |
//! | `/ping/<uuid>/fail` | failure |
//! | `/ping/<uuid>/<exit-status>` | 0: success, 1–255: failure |
//! | `/ping/<uuid>/log` | recorded only |
//! | `/ping/<ping-key>/<slug>[/…]` | the same, by the tenant's ping key and the check's slug |
//!
//! Answers are text: `200 OK`; `404 not found` (no such check: a
//! rotated or deleted token is unknown at once); `400` for a URL that is
//! not one of these; `413` for a body over 100 KiB (nothing is recorded);
//! `429` over a rate limit; `503` when the store could not record it.
//! A ping is answered once it is durable (`monitor.rs`).
//!
//! No client certificate is asked: the token in the URL is the
//! credential. HTTPS with the collector's server certificate, or plain
//! HTTP when the operator sets `ping-tls = false`. Limits: each check may
//! ping `checks.pings-per-second` (burst `checks.ping-burst`); a source
//! address whose requests name no check (guessing tokens) is held to
//! `checks.misses-per-second` (burst `checks.miss-burst`), which never
//! touches its pings of real checks; at most `checks.max-connections`
//! connections are served at once (more wait in the kernel's backlog);
//! the TLS handshake and the request head must come within
//! `limits.handshake-timeout`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::limit::Limiter;
use super::monitor::{Lookup, Monitor, Outcome, Ping};
use super::store::{PingKind, PingRow};
use super::token;
use crate::Config;

/// Largest body kept (Healthchecks' limit, 100 KiB).
pub const MAX_BODY: usize = 100 * 1024;

/// Counters of refusals before a check is looked up, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refused {
    pub malformed: AtomicU64,
    pub too_large: AtomicU64,
    pub limited_source: AtomicU64,
}

#[derive(Clone)]
struct Listener {
    monitor: Monitor,
    misses: Arc<Mutex<Limiter<IpAddr>>>,
    refused: Arc<Refused>,
}

/// The remote address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
struct Remote(SocketAddr);

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// What a ping URL asks, or why it is malformed.
fn parse(path: &str) -> Result<(Lookup, PingKind, Option<i64>), &'static str> {
    let parts: Vec<&str> = path.split('/').collect();
    let (lookup, action) = match parts.as_slice() {
        [t, rest @ ..] if token::is_token(t) && rest.len() <= 1 => {
            (Lookup::Token(token::hash(t)), rest.first().copied())
        }
        [k, slug, rest @ ..] if token::is_ping_key(k) && rest.len() <= 1 => {
            if !super::define::is_slug(slug) {
                return Err("invalid slug");
            }
            (
                Lookup::Slug {
                    key_hash: token::hash(k),
                    slug: (*slug).to_owned(),
                },
                rest.first().copied(),
            )
        }
        _ => return Err("invalid url format"),
    };
    let (kind, exit) = match action {
        None | Some("") => (PingKind::Success, None),
        Some("start") => (PingKind::Start, None),
        Some("fail") => (PingKind::Fail, None),
        Some("log") => (PingKind::Log, None),
        Some(n) if !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()) => {
            match n.parse::<i64>() {
                Ok(0) => (PingKind::Success, Some(0)),
                Ok(code @ 1..=255) => (PingKind::Fail, Some(code)),
                _ => return Err("exit status must be 0 to 255"),
            }
        }
        Some(_) => return Err("invalid url format"),
    };
    Ok((lookup, kind, exit))
}

async fn ping(
    State(l): State<Listener>,
    axum::Extension(Remote(remote)): axum::Extension<Remote>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !matches!(method, Method::GET | Method::HEAD | Method::POST) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let miss = |status, message| {
        let allowed = l
            .misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(remote.ip(), tokio::time::Instant::now());
        if allowed {
            text(status, message)
        } else {
            l.refused.limited_source.fetch_add(1, Relaxed);
            text(StatusCode::TOO_MANY_REQUESTS, "rate limited")
        }
    };
    let (lookup, kind, exit_status) = match parse(&path) {
        Ok(p) => p,
        Err(why) => {
            l.refused.malformed.fetch_add(1, Relaxed);
            return miss(StatusCode::BAD_REQUEST, why);
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                l.refused.too_large.fetch_add(1, Relaxed);
                return text(status, "request body too large (at most 100 KiB)");
            }
            return text(status, "cannot read the request body");
        }
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(200)
                .collect()
        })
        .unwrap_or_default();
    let p = Ping {
        lookup,
        row: PingRow {
            id: 0,
            at_ms: 0,
            kind,
            exit_status,
            source: remote.ip().to_string(),
            method: method.as_str().to_owned(),
            user_agent,
            body: String::from_utf8_lossy(&body).into_owned(),
            duration_ms: None,
        },
    };
    match l.monitor.ping(p).await {
        Ok(Outcome::Recorded) => text(StatusCode::OK, "OK"),
        Ok(Outcome::Unknown) => miss(StatusCode::NOT_FOUND, "not found"),
        Ok(Outcome::Limited) => text(StatusCode::TOO_MANY_REQUESTS, "rate limited"),
        Ok(Outcome::Failed) | Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ping could not be recorded; try again",
        ),
    }
}

async fn fallback() -> Response {
    text(StatusCode::NOT_FOUND, "not found")
}

/// The ping routes.
fn router(monitor: Monitor, settings: &crate::checks::Settings, refused: Arc<Refused>) -> Router {
    let l = Listener {
        monitor,
        misses: Arc::new(Mutex::new(Limiter::new(
            settings.misses_per_second,
            settings.miss_burst,
        ))),
        refused,
    };
    Router::new()
        .route("/ping/{*path}", any(ping))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(l)
}

/// What the ping listener serves with.
pub struct Context {
    pub monitor: Monitor,
    /// `None`: plain HTTP (`ping-tls = false`).
    pub tls: Option<watch::Receiver<Arc<rustls::ServerConfig>>>,
    pub settings: watch::Receiver<Arc<Config>>,
    pub refused: Arc<Refused>,
    pub shutdown: CancellationToken,
}

/// Serves pings on `listener` until shutdown, then lets open requests
/// finish for at most [`crate::ingest::listener::DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, cx: Context) {
    let (max_connections, app) = {
        let c = cx.settings.borrow();
        (
            c.checks.max_connections,
            router(cx.monitor.clone(), &c.checks, cx.refused.clone()),
        )
    };
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(Duration::from_secs(10)));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(crate::ingest::listener::MAX_STREAMS_PER_CONNECTION);
    let builder = Arc::new(builder);
    loop {
        let slot = tokio::select! {
            () = cx.shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
        };
        let (tcp, remote) = tokio::select! {
            () = cx.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "ping listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handshake_timeout = cx.settings.borrow().limits.handshake_timeout;
        let acceptor = cx
            .tls
            .as_ref()
            .map(|t| TlsAcceptor::from(t.borrow().clone()));
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(Remote(remote))));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let served = if let Some(acceptor) = acceptor {
                let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
                let stream = match handshake.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "ping listener: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "ping listener: TLS handshake timed out");
                        return;
                    }
                };
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn.into_owned()).await
            } else {
                let conn = builder.serve_connection(TokioIo::new(tcp), service);
                watcher.watch(conn.into_owned()).await
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "ping connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(crate::ingest::listener::DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("ping listener: connections still open after the drain timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthchecks_urls_parse_and_anything_else_is_malformed() {
        let t = token::new_token();
        let k = token::new_ping_key();
        let ok = |p: &str| parse(p).map(|(_, kind, exit)| (kind, exit));
        assert_eq!(ok(&t), Ok((PingKind::Success, None)));
        assert_eq!(ok(&t.to_uppercase()), Ok((PingKind::Success, None)));
        assert_eq!(ok(&format!("{t}/")), Ok((PingKind::Success, None)));
        assert_eq!(ok(&format!("{t}/start")), Ok((PingKind::Start, None)));
        assert_eq!(ok(&format!("{t}/fail")), Ok((PingKind::Fail, None)));
        assert_eq!(ok(&format!("{t}/log")), Ok((PingKind::Log, None)));
        assert_eq!(ok(&format!("{t}/0")), Ok((PingKind::Success, Some(0))));
        assert_eq!(ok(&format!("{t}/1")), Ok((PingKind::Fail, Some(1))));
        assert_eq!(ok(&format!("{t}/255")), Ok((PingKind::Fail, Some(255))));
        assert_eq!(ok(&format!("{k}/backup-db")), Ok((PingKind::Success, None)));
        assert_eq!(
            ok(&format!("{k}/backup-db/7")),
            Ok((PingKind::Fail, Some(7)))
        );
        assert!(matches!(
            parse(&format!("{t}/start")).unwrap().0,
            Lookup::Token(h) if h == token::hash(&t)
        ));
        for bad in [
            "",
            "not-a-uuid",
            &t[1..],
            &format!("{t}/256"),
            &format!("{t}/-1"),
            &format!("{t}/begin"),
            &format!("{t}/start/again"),
            &k,
            &format!("{k}/Bad Slug"),
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
