//! One session with the collector: connect (TCP, TLS 1.3 with the agent's
//! certificate, HTTP/2), open `AgentService/Session`, send `Hello`, wait for
//! `Welcome`, then heartbeat until the stream ends, the config changes in a
//! way that needs a new connection, or the agent shuts down.
//!
//! The connection is made by our own connector with the rustls config from
//! [`Loaded`], so the TLS policy lives in one place (`sonde_runtime::tls`)
//! and a reload swaps certificates for the next connection.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use sonde_proto::v1::agent_message::Kind as AgentKind;
use sonde_proto::v1::agent_service_client::AgentServiceClient;
use sonde_proto::v1::collector_message::Kind as CollectorKind;
use sonde_proto::v1::{AgentMessage, CollectorMessage, Heartbeat, Hello, Welcome};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::config::Loaded;
use crate::status::AgentStatus;

/// Largest message the agent decodes from the collector.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Outbound queue depth; a full queue means the collector stopped reading.
const OUTBOUND_QUEUE: usize = 64;

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to collector {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("collector {addr} refused the session: {status}")]
    Refused { addr: String, status: tonic::Status },
    #[error("no Welcome from collector {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("protocol error from collector {addr}: {what}")]
    Protocol { addr: String, what: String },
    #[error("collector {addr} ended the session: {status}")]
    Ended { addr: String, status: tonic::Status },
    #[error("collector {addr} closed the stream")]
    Closed { addr: String },
    #[error("collector {addr} is not reading: {OUTBOUND_QUEUE} messages queued")]
    Stalled { addr: String },
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested; the stream was closed cleanly.
    Shutdown,
    /// The config changed in a way that needs a new connection.
    Reconfigure,
    /// The session failed; `established` says whether Welcome was received
    /// (a session that worked resets the backoff).
    Lost {
        established: bool,
        error: SessionError,
    },
}

/// What persists across sessions of one agent process.
#[derive(Debug)]
pub struct Process {
    pub started: Instant,
    pub instance_id: u64,
    pub heartbeat_seq: u64,
}

impl Process {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            instance_id: rand::random(),
            heartbeat_seq: 0,
        }
    }
}

impl Default for Process {
    fn default() -> Self {
        Self::new()
    }
}

/// The error and its sources on one line (tonic's transport errors say
/// little at the top level).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let text = src.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = src.source();
    }
    s
}

async fn connect_tls(
    loaded: Arc<Loaded>,
) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
    let (host, port) = loaded
        .config
        .collector_host_port()
        .ok_or_else(|| invalid("collector address is not HOST:PORT"))?;
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(loaded.config.server_name())
        .map_err(|_| invalid("invalid server name"))?;
    let tls = TlsConnector::from(loaded.tls.clone())
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(tls))
}

async fn connect(loaded: &Arc<Loaded>) -> Result<Channel, SessionError> {
    let addr = loaded.config.collector.clone();
    let connect_err = |reason: String| SessionError::Connect {
        addr: addr.clone(),
        reason,
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| connect_err(chain(&e)))?
        .connect_timeout(loaded.config.reconnect.connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(15))
        .keep_alive_while_idle(true);
    let l = loaded.clone();
    endpoint
        .connect_with_connector(tower::service_fn(move |_| connect_tls(l.clone())))
        .await
        .map_err(|e| connect_err(chain(&e)))
}

fn hello(loaded: &Loaded, process: &Process) -> AgentMessage {
    AgentMessage {
        kind: Some(AgentKind::Hello(Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            facts: Some(crate::facts::collect()),
            last_acked_batch_seq: 0,
            heartbeat_interval_ms: u32::try_from(loaded.config.heartbeat.interval.as_millis())
                .unwrap_or(u32::MAX),
            instance_id: process.instance_id,
            spool_id: 0,
        })),
    }
}

/// Connects and waits for `Welcome`.
async fn open(
    loaded: &Arc<Loaded>,
    process: &Process,
) -> Result<
    (
        mpsc::Sender<AgentMessage>,
        Streaming<CollectorMessage>,
        Welcome,
    ),
    SessionError,
> {
    let addr = loaded.config.collector.clone();
    let channel = connect(loaded).await?;
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    // Queue Hello before the call so it is the first message on the stream.
    let _ = tx.try_send(hello(loaded, process));
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|status| SessionError::Refused {
            addr: addr.clone(),
            status,
        })?
        .into_inner();
    match inbound.message().await {
        Ok(Some(CollectorMessage {
            kind: Some(CollectorKind::Welcome(w)),
        })) => Ok((tx, inbound, w)),
        Ok(Some(other)) => Err(SessionError::Protocol {
            addr,
            what: format!("expected Welcome first, got {other:?}"),
        }),
        Ok(None) => Err(SessionError::Closed { addr }),
        Err(status) => Err(SessionError::Refused { addr, status }),
    }
}

/// Runs one session to its end.
pub async fn run(
    loaded: &Arc<Loaded>,
    config_rx: &mut watch::Receiver<Arc<Loaded>>,
    process: &mut Process,
    status: &watch::Sender<AgentStatus>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let addr = loaded.config.collector.clone();
    let timeout = loaded.config.reconnect.connect_timeout;
    status.send_replace(AgentStatus::Connecting {
        collector: addr.clone(),
    });
    let opened = tokio::select! {
        () = shutdown.cancelled() => return SessionEnd::Shutdown,
        r = tokio::time::timeout(timeout * 2, open(loaded, process)) => r,
    };
    let (tx, mut inbound, welcome) = match opened {
        Err(_) => {
            return SessionEnd::Lost {
                established: false,
                error: SessionError::Timeout {
                    addr,
                    timeout: timeout * 2,
                },
            };
        }
        Ok(Err(error)) => {
            return SessionEnd::Lost {
                established: false,
                error,
            };
        }
        Ok(Ok(opened)) => opened,
    };
    let mut every = match welcome.heartbeat_interval_ms {
        0 => loaded.config.heartbeat.interval,
        ms => Duration::from_millis(ms.into()),
    };
    tracing::info!(
        collector = %addr,
        tenant = %welcome.tenant,
        agent = %welcome.agent_name,
        collector_version = %welcome.collector_version,
        heartbeat = ?every,
        "connected"
    );
    status.send_replace(AgentStatus::Connected {
        collector: addr.clone(),
        heartbeat: every,
    });
    let mut ticker = interval_at(Instant::now(), every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut config_version = 0u64;
    let lost = |error| SessionEnd::Lost {
        established: true,
        error,
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return SessionEnd::Shutdown,
            Ok(()) = config_rx.changed() => {
                let new = config_rx.borrow_and_update().clone();
                if loaded.needs_reconnect(&new) {
                    return SessionEnd::Reconfigure;
                }
            }
            _ = ticker.tick() => {
                process.heartbeat_seq += 1;
                let hb = Heartbeat {
                    seq: process.heartbeat_seq,
                    uptime_ms: u64::try_from(process.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    sent_unix_nanos: unix_nanos(),
                };
                if tx.try_send(AgentMessage { kind: Some(AgentKind::Heartbeat(hb)) }).is_err() {
                    return lost(SessionError::Stalled { addr });
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(CollectorMessage { kind: Some(CollectorKind::Config(update)) })) => {
                    if update.version > config_version {
                        config_version = update.version;
                        if update.heartbeat_interval_ms > 0 {
                            every = Duration::from_millis(update.heartbeat_interval_ms.into());
                            ticker = interval_at(Instant::now() + every, every);
                            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                            tracing::info!(heartbeat = ?every, "collector changed the heartbeat interval");
                            status.send_replace(AgentStatus::Connected { collector: addr.clone(), heartbeat: every });
                        }
                    }
                }
                Ok(Some(CollectorMessage { kind: Some(CollectorKind::Ack(ack)) })) => {
                    tracing::debug!(batch_seq = ack.batch_seq, "ack");
                }
                Ok(Some(CollectorMessage { kind: Some(CollectorKind::Welcome(_)) })) => {
                    return lost(SessionError::Protocol { addr, what: "second Welcome".into() });
                }
                Ok(Some(CollectorMessage { kind: None })) => {
                    tracing::debug!("ignoring collector message of unknown kind");
                }
                Ok(None) => return lost(SessionError::Closed { addr }),
                Err(status) => return lost(SessionError::Ended { addr, status }),
            },
        }
    }
}

fn unix_nanos() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
