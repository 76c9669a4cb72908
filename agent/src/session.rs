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
use sonde_proto::v1::{AgentMessage, CollectorMessage, Heartbeat, Hello, ProbeSet, Welcome};
use sonde_runtime::probes::Probes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::config::Loaded;
use crate::outbox::Outbox;
use crate::status::AgentStatus;

/// Outbound queue depth; a full queue means the collector stopped reading.
const OUTBOUND_QUEUE: usize = 64;
/// Batches sent but not yet acknowledged, at most (fits the queue).
pub const WINDOW: u64 = 32;

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
    #[error("spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
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

/// Applies the collector's probe assignment, or refuses it (keeping the
/// previous one) with the offending key in the log.
fn apply_assignment(set: &ProbeSet, assigned: &watch::Sender<Arc<Probes>>) {
    match Probes::try_from(set) {
        Ok(probes) => {
            if crate::replace_if_changed(assigned, probes) {
                tracing::info!("collector assigned a new set of probes");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "collector's probe assignment refused; keeping the previous one");
        }
    }
}

/// What persists across sessions of one agent process.
#[derive(Debug)]
pub struct Process {
    pub started: Instant,
    pub instance_id: u64,
    pub heartbeat_seq: u64,
    /// Where the collector's probe assignment goes.
    pub assigned: watch::Sender<Arc<Probes>>,
}

impl Process {
    pub fn new(assigned: watch::Sender<Arc<Probes>>) -> Self {
        Self {
            started: Instant::now(),
            instance_id: rand::random(),
            heartbeat_seq: 0,
            assigned,
        }
    }
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
        .map_err(|e| connect_err(sonde_runtime::error::chain(&e)))?
        .connect_timeout(loaded.config.reconnect.connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(15))
        .keep_alive_while_idle(true);
    let l = loaded.clone();
    endpoint
        .connect_with_connector(tower::service_fn(move |_| connect_tls(l.clone())))
        .await
        .map_err(|e| connect_err(sonde_runtime::error::chain(&e)))
}

fn hello(loaded: &Loaded, process: &Process, outbox: &Outbox) -> AgentMessage {
    AgentMessage {
        kind: Some(AgentKind::Hello(Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            facts: Some(crate::facts::collect()),
            last_acked_batch_seq: outbox.acked(),
            heartbeat_interval_ms: u32::try_from(loaded.config.heartbeat.interval.as_millis())
                .unwrap_or(u32::MAX),
            instance_id: process.instance_id,
            spool_id: outbox.spool_id(),
        })),
    }
}

/// Connects and waits for `Welcome`.
async fn open(
    loaded: &Arc<Loaded>,
    process: &Process,
    outbox: &Outbox,
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
    let _ = tx.try_send(hello(loaded, process, outbox));
    let asked = tokio::time::Instant::now();
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(sonde_proto::MAX_MESSAGE_BYTES)
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
        })) => {
            crate::clock::sync(w.server_unix_nanos, asked.elapsed());
            Ok((tx, inbound, w))
        }
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
    outbox: &Outbox,
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
        r = tokio::time::timeout(timeout * 2, open(loaded, process, outbox)) => r,
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
    let every = match welcome.heartbeat_interval_ms {
        0 => loaded.config.heartbeat.interval,
        ms => Duration::from_millis(ms.into()),
    };
    tracing::info!(
        message_id = sonde_runtime::logging::ids::CONNECTED,
        collector = %addr,
        tenant = %welcome.tenant,
        agent = %welcome.agent_name,
        collector_version = %welcome.collector_version,
        heartbeat = ?every,
        "connected"
    );
    let mut live = Live {
        addr,
        outbox,
        status,
        tx,
        acked: 0,
        sent: 0,
        ticker: interval_at(Instant::now(), every),
        config_version: 0,
        ack_failing: false,
    };
    live.set_interval(every, Instant::now());
    match live
        .serve(
            welcome.acked_batch_seq,
            &mut inbound,
            loaded,
            config_rx,
            process,
            shutdown,
        )
        .await
    {
        Ok(end) => end,
        Err(error) => SessionEnd::Lost {
            established: true,
            error,
        },
    }
}

/// An established session: heartbeats, replay from the spool within the
/// window, acknowledgements, config updates.
struct Live<'a> {
    addr: String,
    outbox: &'a Outbox,
    status: &'a watch::Sender<AgentStatus>,
    tx: mpsc::Sender<AgentMessage>,
    /// Highest batch the collector acknowledged.
    acked: u64,
    /// Highest batch sent on this stream.
    sent: u64,
    ticker: tokio::time::Interval,
    config_version: u64,
    /// Whether the last acknowledgement could not be written to the spool.
    ack_failing: bool,
}

impl Live<'_> {
    /// Records an acknowledgement in the spool. When the spool cannot write
    /// it (disk full) the session goes on: the acknowledgement holds in
    /// memory, and at worst a restart sends those batches again, which the
    /// collector recognises as replays.
    async fn record_ack(&mut self, seq: u64) {
        if let Err(e) = self.outbox.ack(seq).await {
            if !self.ack_failing {
                tracing::warn!(error = %e, batch_seq = seq,
                    "cannot record an acknowledgement in the spool; going on (a restart may resend those batches)");
            }
            self.ack_failing = true;
        } else if self.ack_failing {
            tracing::info!(
                batch_seq = seq,
                "acknowledgements are recorded in the spool again"
            );
            self.ack_failing = false;
        }
        self.acked = self.outbox.acked();
    }

    fn set_interval(&mut self, every: Duration, first: Instant) {
        self.ticker = interval_at(first, every);
        self.ticker
            .set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.status.send_replace(AgentStatus::Connected {
            collector: self.addr.clone(),
            heartbeat: every,
        });
    }

    async fn serve(
        &mut self,
        collector_acked: u64,
        inbound: &mut Streaming<CollectorMessage>,
        loaded: &Loaded,
        config_rx: &mut watch::Receiver<Arc<Loaded>>,
        process: &mut Process,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, SessionError> {
        // The collector may hold batches whose Ack we never saw.
        self.record_ack(collector_acked).await;
        self.sent = self.acked;
        let mut newest = self.outbox.subscribe();
        newest.mark_changed();
        loop {
            tokio::select! {
                Ok(()) = newest.changed(), if self.sent - self.acked < WINDOW => {
                    self.fill().await?;
                }
                () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                Ok(()) = config_rx.changed() => {
                    if loaded.needs_reconnect(&config_rx.borrow_and_update()) {
                        return Ok(SessionEnd::Reconfigure);
                    }
                }
                _ = self.ticker.tick() => self.heartbeat(process)?,
                msg = inbound.message() => self.on_message(msg, process).await?,
            }
            // More may be waiting than the window allowed so far.
            if *newest.borrow() > self.sent {
                newest.mark_changed();
            }
        }
    }

    fn heartbeat(&mut self, process: &mut Process) -> Result<(), SessionError> {
        process.heartbeat_seq += 1;
        let hb = Heartbeat {
            seq: process.heartbeat_seq,
            uptime_ms: u64::try_from(process.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            sent_unix_nanos: crate::clock::now_ns(),
        };
        self.tx
            .try_send(AgentMessage {
                kind: Some(AgentKind::Heartbeat(hb)),
            })
            .map_err(|_| SessionError::Stalled {
                addr: self.addr.clone(),
            })
    }

    async fn on_message(
        &mut self,
        msg: Result<Option<CollectorMessage>, tonic::Status>,
        process: &Process,
    ) -> Result<(), SessionError> {
        let addr = || self.addr.clone();
        match msg {
            Ok(Some(CollectorMessage {
                kind: Some(CollectorKind::Config(update)),
            })) => {
                if update.version > self.config_version {
                    self.config_version = update.version;
                    if update.heartbeat_interval_ms > 0 {
                        let every = Duration::from_millis(update.heartbeat_interval_ms.into());
                        tracing::info!(heartbeat = ?every, "collector changed the heartbeat interval");
                        self.set_interval(every, Instant::now() + every);
                    }
                    if let Some(set) = &update.probes {
                        apply_assignment(set, &process.assigned);
                    }
                }
                Ok(())
            }
            Ok(Some(CollectorMessage {
                kind: Some(CollectorKind::Ack(ack)),
            })) => {
                if ack.batch_seq > self.acked {
                    self.record_ack(ack.batch_seq).await;
                }
                Ok(())
            }
            Ok(Some(CollectorMessage {
                kind: Some(CollectorKind::Welcome(_)),
            })) => Err(SessionError::Protocol {
                addr: addr(),
                what: "second Welcome".into(),
            }),
            Ok(Some(CollectorMessage { kind: None })) => {
                tracing::debug!("ignoring collector message of unknown kind");
                Ok(())
            }
            Ok(None) => Err(SessionError::Closed { addr: addr() }),
            Err(status) => Err(SessionError::Ended {
                addr: addr(),
                status,
            }),
        }
    }

    /// Sends stored batches after `sent` while the window allows.
    async fn fill(&mut self) -> Result<(), SessionError> {
        while self.sent - self.acked < WINDOW {
            let Some((seq, batch)) = self.outbox.read_after(self.sent).await? else {
                break;
            };
            self.tx
                .try_send(AgentMessage {
                    kind: Some(AgentKind::Batch(batch)),
                })
                .map_err(|_| SessionError::Stalled {
                    addr: self.addr.clone(),
                })?;
            self.sent = seq;
        }
        Ok(())
    }
}
