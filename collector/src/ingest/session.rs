//! `sonde.v1.AgentService/Session`: one bidirectional stream per agent.
//!
//! The agent says `Hello`, the collector registers it (tenant and name from
//! the certificate only) and answers `Welcome`; every `Heartbeat` is
//! recorded and reported to the liveness detector. A second session of the
//! same agent replaces the first. When the collector's heartbeat settings
//! change on reload, connected agents get a `ConfigUpdate`.

use sonde_runtime::logging::ids;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sonde_proto::Role;
use sonde_proto::v1::agent_message::Kind as AgentKind;
use sonde_proto::v1::agent_service_server::AgentService;
use sonde_proto::v1::collector_message::Kind as CollectorKind;
use sonde_proto::v1::{
    Ack, AgentMessage, CollectorMessage, ConfigUpdate, Hello, ProbeSet, ResultBatch, Welcome,
    record,
};
use sonde_runtime::probes::Probes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::error::SessionError;
use crate::ingest::pace::Pacer;
use crate::ingest::peer::Peer;
use crate::log::{Append, IngestLog as _, Ingested};
use crate::store::{AgentKey, SessionInfo, now_ms};

/// How long a new stream may take to send `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Live sessions, one per agent.
#[derive(Debug)]
pub struct Sessions {
    live: Mutex<HashMap<AgentKey, (u64, CancellationToken)>>,
    next_gen: AtomicU64,
}

impl Sessions {
    pub(crate) fn new() -> Self {
        // Generations increase across restarts too (they start at the
        // current time in µs), so a stale close never hides a new session.
        let start = u64::try_from(now_ms()).unwrap_or(0).saturating_mul(1000);
        Self {
            live: Mutex::new(HashMap::new()),
            next_gen: AtomicU64::new(start),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentKey, (u64, CancellationToken)>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new session, cancelling the agent's previous one.
    fn open(&self, key: &AgentKey, parent: &CancellationToken) -> (u64, CancellationToken) {
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let token = parent.child_token();
        if let Some((_, old)) = self.lock().insert(key.clone(), (generation, token.clone())) {
            old.cancel();
        }
        (generation, token)
    }

    fn close(&self, key: &AgentKey, generation: u64) {
        let mut live = self.lock();
        if live.get(key).is_some_and(|(g, _)| *g == generation) {
            live.remove(key);
        }
    }

    /// Number of agents connected now.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }
}

/// The gRPC service implementation.
#[derive(Debug, Clone)]
pub struct AgentSessions {
    shared: Arc<Shared>,
}

impl AgentSessions {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn kind_name(kind: Option<&AgentKind>) -> &'static str {
    match kind {
        Some(AgentKind::Hello(_)) => "Hello",
        Some(AgentKind::Heartbeat(_)) => "Heartbeat",
        Some(AgentKind::Batch(_)) => "ResultBatch",
        None => "an empty or unknown message",
    }
}

async fn read_hello(inbound: &mut Streaming<AgentMessage>) -> Result<Hello, SessionError> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| SessionError::HelloTimeout(HELLO_TIMEOUT))?;
    match first {
        Ok(Some(AgentMessage {
            kind: Some(AgentKind::Hello(hello)),
        })) => Ok(hello),
        Ok(Some(other)) => Err(SessionError::ExpectedHello(kind_name(other.kind.as_ref()))),
        Ok(None) | Err(_) => Err(SessionError::ClosedBeforeHello),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The first message of a session.
fn welcome(key: &AgentKey, interval: Duration, acked: u64) -> CollectorMessage {
    CollectorMessage {
        kind: Some(CollectorKind::Welcome(Welcome {
            heartbeat_interval_ms: millis_u32(interval),
            server_unix_nanos: sonde_runtime::clock::unix_nanos(),
            acked_batch_seq: acked,
            collector_version: VERSION.to_owned(),
            tenant: key.tenant.clone(),
            agent_name: key.name.clone(),
        })),
    }
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl AgentService for AgentSessions {
    type SessionStream = ReceiverStream<Result<CollectorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request
            .extensions()
            .get::<Peer>()
            .cloned()
            .ok_or(SessionError::NoPeer)?;
        if peer.identity.role != Role::Agent {
            let err = SessionError::NotAgent(peer.identity.role);
            tracing::warn!(peer = %peer.identity, remote = %peer.remote, reason = %err, "session refused");
            return Err(err.into());
        }
        let key = AgentKey {
            tenant: peer.identity.tenant.clone(),
            name: peer.identity.name.clone(),
        };
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound).await.inspect_err(|e| {
            tracing::warn!(agent = %key, remote = %peer.remote, reason = %e, "session refused");
        })?;
        let shared = self.shared.clone();
        let mut settings = shared.settings.clone();
        let config = settings.borrow_and_update().clone();
        let requested = (hello.heartbeat_interval_ms > 0)
            .then(|| Duration::from_millis(hello.heartbeat_interval_ms.into()));
        let mut overrides = shared.agent_settings.subscribe();
        let (interval, grace) = crate::agent_settings::effective(
            &config,
            overrides.borrow_and_update().get(&key),
            &key,
            requested,
        );
        let mut managed = shared.targets.subscribe();
        let probes = assignment(&config, &managed.borrow_and_update(), &key);
        let facts = hello.facts.unwrap_or_default();
        let info = SessionInfo {
            remote_addr: peer.remote.to_string(),
            agent_version: hello.agent_version.clone(),
            hostname: facts.hostname,
            os: facts.os,
            heartbeat_interval_ms: millis(interval),
            grace_ms: millis(grace),
        };
        let (generation, cancel) = shared.sessions.open(&key, &shared.shutdown);
        let k = key.clone();
        let opened = shared
            .store
            .run(move |s| s.session_opened(&k, &info, generation, now_ms()))
            .await;
        if let Err(e) = opened {
            shared.sessions.close(&key, generation);
            tracing::error!(agent = %key, error = %e, "cannot record session; refusing it");
            return Err(SessionError::from(e).into());
        }
        shared.liveness.seen(key.clone(), grace).await;
        let (k, spool_id) = (key.clone(), hello.spool_id);
        let acked = shared
            .log
            .spool_mark(k, spool_id)
            .await
            .map_err(SessionError::from)?;
        tracing::info!(
            message_id = ids::SESSION_OPENED,
            agent = %key,
            remote = %peer.remote,
            serial = %peer.serial,
            version = %sonde_runtime::text::safe(&hello.agent_version),
            interval = ?interval,
            grace = ?grace,
            "agent session opened"
        );
        let (tx, rx) = mpsc::channel(16);
        let _ = tx.send(Ok(welcome(&key, interval, acked))).await;

        tokio::spawn(
            Stream {
                shared,
                key,
                spool_id,
                generation,
                cancel,
                settings,
                managed,
                overrides,
                requested,
                interval,
                grace,
                probes,
                pacer: Pacer::new(
                    config.limits.messages_per_second,
                    config.limits.message_burst,
                    Instant::now(),
                ),
                paced_since: None,
                tx,
            }
            .serve(inbound),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What an agent runs for the collector: its `[[agent]]` probes and the
/// enabled managed targets that name it (or all its tenant's agents).
fn assignment(
    config: &crate::Config,
    managed: &[crate::targets::ManagedTarget],
    key: &AgentKey,
) -> Probes {
    let within = config.within(&key.tenant);
    config
        .assigned_probes(&key.tenant, &key.name)
        .merged(&crate::targets::assigned(
            managed,
            &key.tenant,
            &key.name,
            within.as_deref(),
        ))
}

/// One open session after `Welcome`: reads heartbeats, pushes config
/// updates, and records the close.
struct Stream {
    shared: Arc<Shared>,
    key: AgentKey,
    spool_id: u64,
    generation: u64,
    cancel: CancellationToken,
    settings: tokio::sync::watch::Receiver<Arc<crate::Config>>,
    /// The targets managed through the API.
    managed: tokio::sync::watch::Receiver<Arc<Vec<crate::targets::ManagedTarget>>>,
    /// Per-agent settings changed through the API.
    overrides: tokio::sync::watch::Receiver<crate::agent_settings::All>,
    requested: Option<Duration>,
    interval: Duration,
    grace: Duration,
    /// The probe assignment last sent to the agent.
    probes: Probes,
    /// `[limits] messages-per-second` for this session.
    pacer: Pacer,
    /// When this session was last reported as paced (one warning a
    /// minute at most).
    paced_since: Option<Instant>,
    tx: mpsc::Sender<Result<CollectorMessage, Status>>,
}

impl Stream {
    async fn serve(mut self, mut inbound: Streaming<AgentMessage>) {
        let end = self.run(&mut inbound).await;
        let key = &self.key;
        match end {
            Ok(()) => {
                tracing::info!(message_id = ids::SESSION_CLOSED, agent = %key, "agent session closed");
            }
            Err(SessionError::Store(e)) if e.is_disk_full() => {
                tracing::error!(agent = %key, error = %e,
                    "collector disk is full: batches are not acknowledged; agents keep them in their spools until there is room");
                let _ = self.tx.send(Err(SessionError::Store(e).into())).await;
            }
            Err(e) => {
                tracing::info!(message_id = ids::SESSION_CLOSED, agent = %key, reason = %e, "agent session ended by collector");
                let _ = self.tx.send(Err(e.into())).await;
            }
        }
        self.shared.sessions.close(key, self.generation);
        let (k, generation) = (key.clone(), self.generation);
        if let Err(e) = self
            .shared
            .store
            .run(move |s| s.session_closed(&k, generation))
            .await
        {
            tracing::error!(agent = %key, error = %e, "cannot record session close");
        }
    }

    async fn run(&mut self, inbound: &mut Streaming<AgentMessage>) -> Result<(), SessionError> {
        // The assignment follows the Welcome at once (even when empty, so an
        // agent drops what it was assigned before).
        let mut config_version = 1u64;
        let first = ConfigUpdate {
            version: config_version,
            heartbeat_interval_ms: 0,
            probes: Some(ProbeSet::from(&self.probes)),
        };
        let _ = self
            .tx
            .send(Ok(CollectorMessage {
                kind: Some(CollectorKind::Config(first)),
            }))
            .await;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => {
                    return Err(if self.shared.shutdown.is_cancelled() {
                        SessionError::ShuttingDown
                    } else {
                        SessionError::Replaced
                    });
                }
                // A reload or a change of the managed targets; either
                // re-derives everything (one may carry the other's change).
                Ok(()) = self.settings.changed() => self.reconfigure(&mut config_version).await?,
                Ok(()) = self.managed.changed() => self.reconfigure(&mut config_version).await?,
                Ok(()) = self.overrides.changed() => self.reconfigure(&mut config_version).await?,
                msg = inbound.message() => {
                if matches!(msg, Ok(Some(_))) {
                    self.pace().await;
                }
                match msg {
                    Ok(Some(AgentMessage { kind: Some(AgentKind::Heartbeat(hb)) })) => {
                        self.shared.writer.append(Append::heartbeat(&self.key, hb)).await?;
                        self.shared.ingest.heartbeats.fetch_add(1, Ordering::Relaxed);
                        self.shared.alert.received();
                        self.shared.liveness.seen(self.key.clone(), self.grace).await;
                    }
                    Ok(Some(AgentMessage { kind: Some(AgentKind::Hello(_)) })) => {
                        return Err(SessionError::DuplicateHello);
                    }
                    Ok(Some(AgentMessage { kind: Some(AgentKind::Batch(batch)) })) => {
                        let received = std::time::Instant::now();
                        let ack = self.ingest(batch).await?;
                        let ack = CollectorMessage { kind: Some(CollectorKind::Ack(Ack { batch_seq: ack })) };
                        if self.tx.send(Ok(ack)).await.is_err() {
                            return Ok(()); // the agent hung up; it will replay
                        }
                        self.shared.ingest.ack_latency.observe(received.elapsed());
                    }
                    Ok(Some(AgentMessage { kind: None })) => {
                        tracing::debug!(agent = %self.key, "ignoring message of unknown kind");
                    }
                    Ok(None) => return Ok(()),
                    // Too large (over the gRPC message limit) or not
                    // protobuf: the agent is told why.
                    Err(status) if matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::Internal) => {
                        tracing::warn!(agent = %self.key, %status, "unreadable message; ending session");
                        return Err(SessionError::Unreadable(status));
                    }
                    Err(status) => {
                        tracing::debug!(agent = %self.key, %status, "session stream error");
                        return Ok(());
                    }
                }
                }
            }
        }
    }

    /// Waits as long as the rate limit says before handling a message.
    async fn pace(&mut self) {
        let now = Instant::now();
        let wait = self.pacer.take(now);
        if wait.is_zero() {
            return;
        }
        self.shared
            .refusals
            .paced_messages
            .fetch_add(1, Ordering::Relaxed);
        if self
            .paced_since
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
        {
            self.paced_since = Some(now);
            let limits = self.shared.settings.borrow().limits;
            tracing::warn!(
                agent = %self.key,
                rate = limits.messages_per_second,
                burst = limits.message_burst,
                "agent sends faster than [limits] messages-per-second; reading its messages more slowly"
            );
        }
        tokio::time::sleep(wait).await;
    }

    /// Makes a batch durable (or recognises a replay) and returns the
    /// cumulative acknowledgement to send.
    async fn ingest(&self, batch: ResultBatch) -> Result<u64, SessionError> {
        if batch.batch_seq == 0 {
            return Err(SessionError::ZeroBatchSeq);
        }
        let results = sonde_proto::records::results(&batch.records);
        for r in &batch.records {
            if let Some(record::Kind::Gap(g)) = &r.kind {
                // The agent's own words: escaped for the log.
                let reason = sonde_runtime::text::safe(&g.reason);
                tracing::warn!(agent = %self.key, dropped = g.dropped, reason = %reason, "agent reports a gap");
            }
        }
        let seq = batch.batch_seq;
        let results = u32::try_from(results).unwrap_or(u32::MAX);
        let append = Append::batch(&self.key, self.spool_id, batch, results);
        let outcome = self.shared.writer.append(append).await?.ingested;
        let counters = &self.shared.ingest;
        match outcome {
            Ingested::Duplicate(hwm) => {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent = %self.key, batch_seq = seq, hwm, "replayed batch acknowledged again");
            }
            Ingested::Stored(_) => {
                self.shared.alert.received();
                counters.batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .results
                    .fetch_add(u64::from(results), Ordering::Relaxed);
            }
        }
        Ok(outcome.ack())
    }

    /// Applies new settings or managed targets: records a changed
    /// heartbeat policy and pushes the update the agent needs.
    async fn reconfigure(&mut self, version: &mut u64) -> Result<(), SessionError> {
        let before = (self.interval, self.grace);
        let update = self.apply_settings(version);
        if (self.interval, self.grace) != before {
            let (k, i, g) = (self.key.clone(), millis(self.interval), millis(self.grace));
            self.shared
                .store
                .run(move |s| s.set_heartbeat_policy(&k, i, g))
                .await?;
        }
        if let Some(update) = update {
            let _ = self.tx.send(Ok(update)).await;
        }
        Ok(())
    }

    /// Re-derives interval, grace and probe assignment after a reload or
    /// a change of the managed targets; returns the update to push when
    /// the interval or the assignment changed.
    fn apply_settings(&mut self, version: &mut u64) -> Option<CollectorMessage> {
        let config = self.settings.borrow_and_update().clone();
        let (interval, grace) = crate::agent_settings::effective(
            &config,
            self.overrides.borrow_and_update().get(&self.key),
            &self.key,
            self.requested,
        );
        self.grace = grace;
        let probes = assignment(&config, &self.managed.borrow_and_update(), &self.key);
        let new_interval = interval != self.interval;
        let new_probes = probes != self.probes;
        if !new_interval && !new_probes {
            return None;
        }
        *version += 1;
        let mut update = ConfigUpdate {
            version: *version,
            heartbeat_interval_ms: 0,
            probes: None,
        };
        if new_interval {
            self.interval = interval;
            update.heartbeat_interval_ms = millis_u32(interval);
            tracing::info!(agent = %self.key, interval = ?interval, "pushing new heartbeat interval");
        }
        if new_probes {
            update.probes = Some(ProbeSet::from(&probes));
            self.probes = probes;
            tracing::info!(agent = %self.key, "pushing new probe assignment");
        }
        Some(CollectorMessage {
            kind: Some(CollectorKind::Config(update)),
        })
    }
}
