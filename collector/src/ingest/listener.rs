//! The mTLS listener: accepts TCP, completes the TLS 1.3 handshake with a
//! client certificate, attaches the verified [`Peer`] to every request and
//! serves gRPC and the HTTP API (HTTP/2 and HTTP/1.1) on one port.
//!
//! The TLS configuration is read from a `watch` channel at every accept, so
//! a reload (new CA, CRL or server certificate) applies to new connections
//! without a restart; connections already open are checked again against
//! the reloaded configuration, and those whose certificate it no longer
//! accepts (revoked by the new CRL, issued by a CA no longer trusted) are
//! closed, as is a connection whose certificate expires while it is open.
//!
//! Limits (`[limits]`): the handshake must finish within
//! `handshake-timeout`; one certificate identity holds at most
//! `connections-per-certificate` connections (more are answered 429 and
//! closed); HTTP/2 streams per connection are capped. Failed handshakes and
//! refusals are logged with the reason and counted in
//! [`Refusals`](crate::metrics::Refusals).

use sonde_runtime::logging::ids;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::CertificateError;
use rustls::pki_types::CertificateDer;
use sonde_proto::Identity;
use sonde_runtime::tls::ServerTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::ingest::peer::Peer;
use crate::metrics::Refusals;
use crate::{Config, expiry};

/// How long open connections get to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent HTTP/2 streams (requests) on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// How long a connection refused for the per-certificate limit is kept to
/// deliver its 429.
const REFUSAL_LINGER: Duration = Duration::from_secs(5);

/// Why a handshake was refused, in words an operator acts on.
pub fn rejection_reason(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => "no client certificate presented".into(),
        E::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "client certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "client certificate not yet valid".into()
            }
            CertificateError::Revoked => "client certificate revoked by the CRL".into(),
            CertificateError::UnknownIssuer => {
                "client certificate not issued by the configured CA".into()
            }
            CertificateError::BadSignature => "client certificate has a bad signature".into(),
            CertificateError::Other(other) => format!("client certificate refused: {}", other.0),
            other => format!("client certificate invalid: {other:?}"),
        },
        E::PeerIncompatible(p) => format!("client TLS incompatible (TLS 1.3 required): {p:?}"),
        other => other.to_string(),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or_else(|| e.to_string(), rejection_reason)
}

/// Connections open per certificate identity.
#[derive(Debug, Default)]
struct Open(Mutex<HashMap<Identity, usize>>);

/// One counted connection; uncounted on drop.
struct Slot {
    open: Arc<Open>,
    identity: Identity,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a connection of `identity` unless it already has `limit`.
    fn claim(self: &Arc<Self>, identity: &Identity, limit: usize) -> Result<Slot, usize> {
        let mut open = self.lock();
        let n = open.entry(identity.clone()).or_default();
        if *n >= limit {
            return Err(*n);
        }
        *n += 1;
        Ok(Slot {
            open: self.clone(),
            identity: identity.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

/// What the listener reads and reports besides the app it serves.
#[derive(Debug)]
pub struct Context {
    /// The TLS configuration, replaced on reload.
    pub tls: watch::Receiver<ServerTls>,
    /// `[limits]` and `[tls] expiry-warning`, read at every accept.
    pub settings: watch::Receiver<Arc<Config>>,
    pub refusals: Arc<Refusals>,
    /// Where client certificates that expire soon are reported.
    pub expiring: expiry::Reporter,
    pub shutdown: CancellationToken,
}

/// Serves `app` on `listener` until `cx.shutdown`, then drains connections
/// for at most [`DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, app: Router, cx: Context) {
    let Context {
        tls,
        settings,
        refusals,
        expiring,
        shutdown,
    } = cx;
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let builder = Arc::new(builder);
    let open = Arc::new(Open::default());
    loop {
        let (tcp, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: say so, breathe.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (limits, warning) = {
            let s = settings.borrow();
            (s.limits, s.tls.expiry_warning)
        };
        let expiring = expiring.clone();
        let mut tls = tls.clone();
        let acceptor = TlsAcceptor::from(tls.borrow_and_update().config.clone());
        let conn = Connection {
            app: app.clone(),
            builder: builder.clone(),
            refusals: refusals.clone(),
            remote,
        };
        let watcher = graceful.watcher();
        let open = open.clone();
        tokio::spawn(async move {
            let Some((stream, peer, chain)) = handshake(
                acceptor,
                tcp,
                remote,
                limits.handshake_timeout,
                &conn.refusals,
            )
            .await
            else {
                return;
            };
            // Parsed once: for the expiry report and the expiry timer.
            let now = sonde_runtime::clock::unix_millis() / 1000;
            let validity = chain.first().and_then(sonde_runtime::tls::validity);
            let until_expiry = validity.as_ref().map_or(Duration::MAX, |v| {
                Duration::from_secs(u64::try_from(v.not_after - now + 1).unwrap_or(0))
            });
            expiring.connected(&peer.identity, validity, warning, now);
            let slot = match open.claim(&peer.identity, limits.connections_per_certificate) {
                Ok(slot) => slot,
                Err(n) => return conn.refuse(stream, &peer, n).await,
            };
            conn.serve(stream, peer, &chain, until_expiry, &mut tls, watcher)
                .await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        }
    }
}

/// What one accepted connection is served with.
struct Connection {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    refusals: Arc<Refusals>,
    remote: SocketAddr,
}

impl Connection {
    /// Serves requests until the client or the server ends the connection,
    /// or until its certificate is no longer accepted (after a reload) or
    /// expires (`until_expiry`).
    async fn serve(
        self,
        stream: TlsStream<TcpStream>,
        peer: Peer,
        chain: &[CertificateDer<'static>],
        until_expiry: Duration,
        tls: &mut watch::Receiver<ServerTls>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let remote = self.remote;
        let expiry = tokio::time::sleep(until_expiry);
        tokio::pin!(expiry);
        let svc = TowerToHyperService::new(self.app.layer(Extension(peer.clone())));
        let conn = watcher.watch(
            self.builder
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned(),
        );
        tokio::pin!(conn);
        let reason = loop {
            tokio::select! {
                ended = &mut conn => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %peer.identity, remote = %remote, error = %e, "connection ended with error");
                    }
                    return;
                }
                Ok(()) = tls.changed() => {
                    let verdict = tls.borrow_and_update().recheck(chain);
                    if let Err(e) = verdict {
                        break rejection_reason(&e);
                    }
                }
                () = &mut expiry => break "client certificate expired".to_owned(),
            }
        };
        // Dropping the connection closes it at once: its streams (an agent
        // session, a live view) end with it.
        self.refusals.closed_certificate.fetch_add(1, Relaxed);
        tracing::warn!(message_id = ids::CONNECTION_REVOKED, peer = %peer.identity, remote = %remote, reason = %reason, "closing connection: certificate no longer accepted");
    }

    /// Answers every request of a connection over the per-certificate limit
    /// with 429 naming the limit, then closes it.
    async fn refuse(self, stream: TlsStream<TcpStream>, peer: &Peer, open: usize) {
        self.refusals.connection_limit.fetch_add(1, Relaxed);
        tracing::warn!(peer = %peer.identity, remote = %self.remote, open, "connection refused: too many connections for this certificate ([limits] connections-per-certificate)");
        let message = format!(
            "{}: {open} connections already open, the most one certificate may hold ([limits] connections-per-certificate)\n",
            peer.identity
        );
        let app = Router::new().fallback(move || {
            let message = message.clone();
            async move {
                (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::CONNECTION, "close")],
                    message,
                )
            }
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
        let _ = tokio::time::timeout(REFUSAL_LINGER, conn).await;
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    timeout: Duration,
    refusals: &Refusals,
) -> Option<(TlsStream<TcpStream>, Peer, Vec<CertificateDer<'static>>)> {
    let _ = tcp.set_nodelay(true);
    let (accepted, presented) =
        sonde_runtime::tls::presented_during(tokio::time::timeout(timeout, acceptor.accept(tcp)))
            .await;
    let presented = presented.as_deref().unwrap_or("no client certificate");
    let stream = match accepted {
        Err(_) => {
            refusals.handshakes.fetch_add(1, Relaxed);
            tracing::warn!(message_id = ids::HANDSHAKE_REFUSED, remote = %remote, certificate = presented, reason = %"handshake timed out", "TLS handshake rejected");
            return None;
        }
        Ok(Err(e)) => {
            refusals.handshakes.fetch_add(1, Relaxed);
            tracing::warn!(message_id = ids::HANDSHAKE_REFUSED, remote = %remote, certificate = presented, reason = %io_reason(&e), "TLS handshake rejected");
            return None;
        }
        Ok(Ok(s)) => s,
    };
    // The verifier already required a valid sonde SAN; read it back.
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .to_vec();
    match chain.first().map(sonde_runtime::tls::identity_of) {
        Some(Ok(identity)) => {
            tracing::debug!(peer = %identity, remote = %remote, "TLS connection accepted");
            let serial = chain
                .first()
                .map(sonde_runtime::tls::serial_of)
                .unwrap_or_default();
            let peer = Peer {
                identity,
                remote,
                serial,
            };
            Some((stream, peer, chain))
        }
        other => {
            tracing::warn!(remote = %remote, reason = ?other, "TLS connection without identity dropped");
            None
        }
    }
}
