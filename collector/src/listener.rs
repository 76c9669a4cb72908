//! The mTLS listener: accepts TCP, completes the TLS 1.3 handshake with a
//! client certificate, attaches the verified [`Peer`] to every request and
//! serves gRPC and the HTTP API (HTTP/2 and HTTP/1.1) on one port.
//!
//! The TLS configuration is read from a `watch` channel at every accept, so
//! a reload (new CA, CRL or server certificate) applies to new connections
//! without a restart. Failed handshakes are logged with the reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::{CertificateError, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::peer::Peer;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Serves `app` on `listener` until `shutdown`, then drains connections for
/// at most [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
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
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some((stream, peer)) = handshake(acceptor, tcp, remote).await else {
                return;
            };
            let svc = TowerToHyperService::new(app.layer(Extension(peer.clone())));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %peer.identity, remote = %remote, error = %e, "connection ended with error");
            }
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

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Peer)> {
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Err(_) => {
            tracing::warn!(remote = %remote, reason = "handshake timed out", "TLS handshake rejected");
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(remote = %remote, reason = %io_reason(&e), "TLS handshake rejected");
            return None;
        }
        Ok(Ok(s)) => s,
    };
    // The verifier already required a valid sonde SAN; read it back.
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(sonde_runtime::tls::identity_of);
    match identity {
        Some(Ok(identity)) => {
            tracing::debug!(peer = %identity, remote = %remote, "TLS connection accepted");
            Some((stream, Peer { identity, remote }))
        }
        other => {
            tracing::warn!(remote = %remote, reason = ?other, "TLS connection without identity dropped");
            None
        }
    }
}
