//! The TCP connect engine: connects to every `HOST:PORT` target on its
//! interval and reports the connect time or why it failed (`refused`,
//! `timeout`, `unreachable`, `reset`, `other` with the OS error).
//!
//! Slots are spread over the interval like every engine's; connects run
//! concurrently, at most [`MAX_IN_FLIGHT`] at once (see [`super::tasks`]). A connected socket is closed at once with
//! `SO_LINGER` 0 (a reset), so probing a thousand targets a second leaves no
//! sockets in `TIME_WAIT` on either side.
//!
//! The socket work sits behind [`Connector`], so the engine is tested on
//! tokio's paused clock.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sonde_proto::v1::{Record, TcpResult, TcpStatus, record};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::emit::Emitter;
use super::tasks::{self, Limits};

/// Connects in flight at most.
pub const MAX_IN_FLIGHT: usize = 4096;

/// One endpoint to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpTarget {
    /// The target as configured (`HOST:PORT`).
    pub label: Arc<str>,
    pub addr: SocketAddr,
    pub interval: Duration,
    pub timeout: Duration,
}

/// What the engine needs from the network.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `addr`; resolves when the handshake completed (the
    /// connection is then closed) or failed.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
    /// Wall-clock now, nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> i64;
}

/// Real TCP connects.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemConnector;

impl Connector for SystemConnector {
    async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // Close with a reset: no TIME_WAIT left behind by probing.
        socket.set_zero_linger()?;
        let stream = socket.connect(addr).await?;
        drop(stream);
        Ok(())
    }

    fn now_unix_nanos(&self) -> i64 {
        sonde_runtime::clock::unix_nanos()
    }
}

/// The result kind for a failed connect.
pub fn classify(e: &io::Error) -> TcpStatus {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => TcpStatus::Refused,
        K::TimedOut => TcpStatus::Timeout,
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => TcpStatus::Unreachable,
        K::ConnectionReset | K::ConnectionAborted => TcpStatus::Reset,
        _ => TcpStatus::Other,
    }
}

/// A result for one connect.
pub fn result(
    label: &str,
    addr: SocketAddr,
    sent_ns: i64,
    outcome: Result<Duration, (TcpStatus, String)>,
) -> Record {
    let (status, connect, error) = match outcome {
        Ok(d) => (
            TcpStatus::Ok,
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            String::new(),
        ),
        Err((status, error)) => (status, 0, error),
    };
    Record {
        kind: Some(record::Kind::Tcp(TcpResult {
            target: label.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port().into(),
            sent_unix_nanos: sent_ns,
            connect_nanos: connect,
            status: status as i32,
            error,
        })),
    }
}

/// Connects to `target` once, bounded by its timeout.
pub async fn probe<C: Connector>(net: &C, target: &TcpTarget) -> Record {
    let sent_ns = net.now_unix_nanos();
    let start = Instant::now();
    let outcome = match tokio::time::timeout(target.timeout, net.connect(target.addr)).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err((classify(&e), e.to_string())),
        Err(_) => Err((
            TcpStatus::Timeout,
            format!("no answer within {:?}", target.timeout),
        )),
    };
    result(&target.label, target.addr, sent_ns, outcome)
}

/// Runs until `shutdown`, connecting to the targets in `targets` (a new
/// value replaces the set at once) and sending results to `emit`.
pub async fn run<C: Connector>(
    net: C,
    targets: watch::Receiver<Arc<Vec<TcpTarget>>>,
    emit: Emitter,
    shutdown: CancellationToken,
) {
    tasks::run(
        Limits {
            probe: "tcp",
            max_in_flight: MAX_IN_FLIGHT,
            one_per_target: false,
        },
        net,
        targets,
        |t| t.interval,
        |net, t| async move { probe(&*net, &t).await },
        C::now_unix_nanos,
        emit,
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests;
