//! Missing-heartbeat detection.
//!
//! One task owns a deadline per known agent (last sign of life + grace).
//! Sessions report every hello and heartbeat with [`Liveness::seen`]; when a
//! deadline passes the agent becomes *missing*, and the next sign of life
//! makes it *back*. Both transitions are written to the store with their
//! event in one transaction, in the order they happen.
//!
//! Deadlines use tokio's clock, so tests drive them with a paused clock.
//! After a collector restart every agent that was up gets its grace plus
//! `heartbeat.restart-grace` (default 45 s) before it can be missing: its
//! sessions broke when the collector stopped and it reconnects with its
//! backoff (up to `reconnect.max`, 30 s by default), so a plain grace would
//! page healthy agents on most restarts. An agent gone for good is declared
//! missing at most grace + restart-grace after the start. Agents that were
//! missing stay missing until they speak. (An agent moving to another
//! collector of a cluster will be given the same allowance.)

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::store::{AgentKey, AgentState, EventKind, Store, StoreError, now_ms};

/// Handle to the liveness task.
#[derive(Debug, Clone)]
pub struct Liveness {
    tx: mpsc::Sender<Command>,
}

#[derive(Debug)]
enum Command {
    Seen { key: AgentKey, grace: Duration },
    Ping(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Entry {
    last_seen: Instant,
    grace: Duration,
    /// Added to the grace until the agent's first sign of life after a
    /// collector start (its reconnect backoff).
    allowance: Duration,
    missing_since: Option<Instant>,
}

impl Entry {
    fn deadline(&self) -> Instant {
        self.last_seen + self.grace + self.allowance
    }
}

impl Liveness {
    /// Starts the task with the agents known to the store; those that were
    /// up get `restart_grace` on top of their grace to reconnect.
    pub fn spawn(
        store: Store,
        known: Vec<(AgentKey, AgentState, u64)>,
        restart_grace: Duration,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let now = Instant::now();
        let agents = known
            .into_iter()
            .map(|(key, state, grace_ms)| {
                let entry = Entry {
                    last_seen: now,
                    grace: Duration::from_millis(grace_ms),
                    allowance: restart_grace,
                    missing_since: (state == AgentState::Missing).then_some(now),
                };
                (key, entry)
            })
            .collect();
        let task = tokio::spawn(run(store, agents, rx, shutdown));
        (Self { tx }, task)
    }

    /// Reports a sign of life from `key`, whose grace period is `grace`.
    pub async fn seen(&self, key: AgentKey, grace: Duration) {
        // The task only stops at shutdown; a lost report then is harmless.
        let _ = self.tx.send(Command::Seen { key, grace }).await;
    }

    /// Resolves once the task has processed everything sent before; fails
    /// if the task is gone or stuck past `timeout` (used by the watchdog).
    pub async fn ping(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let round_trip =
            async { self.tx.send(Command::Ping(tx)).await.is_ok() && rx.await.is_ok() };
        tokio::time::timeout(timeout, round_trip)
            .await
            .unwrap_or(false)
    }
}

async fn run(
    store: Store,
    mut agents: HashMap<AgentKey, Entry>,
    mut rx: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) {
    loop {
        let next = agents
            .values()
            .filter(|e| e.missing_since.is_none())
            .map(Entry::deadline)
            .min();
        let wake = async {
            match next {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Ping(reply)) => { let _ = reply.send(()); }
                Some(Command::Seen { key, grace }) => {
                    let now = Instant::now();
                    let entry = agents.entry(key.clone()).or_insert(Entry {
                        last_seen: now,
                        grace,
                        allowance: Duration::ZERO,
                        missing_since: None,
                    });
                    entry.last_seen = now;
                    entry.grace = grace;
                    entry.allowance = Duration::ZERO;
                    if let Some(since) = entry.missing_since.take() {
                        let detail = json!({ "missing_for_ms": millis(now - since) });
                        tracing::info!(agent = %key, missing_for = ?(now - since), "agent is back");
                        record(&store, key, AgentState::Up, EventKind::AgentBack, detail).await;
                    }
                }
            },
            () = wake => {
                let now = Instant::now();
                let expired: Vec<AgentKey> = agents
                    .iter()
                    .filter(|(_, e)| e.missing_since.is_none() && e.deadline() <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in expired {
                    let Some(entry) = agents.get_mut(&key) else { continue };
                    entry.missing_since = Some(now);
                    let silent = now - entry.last_seen;
                    let mut detail = json!({
                        "silent_for_ms": millis(silent),
                        "grace_ms": millis(entry.grace),
                    });
                    if !entry.allowance.is_zero() {
                        // Not heard from since the collector started.
                        detail["restart_grace_ms"] = json!(millis(entry.allowance));
                    }
                    tracing::warn!(agent = %key, silent_for = ?silent, grace = ?entry.grace, "agent is missing");
                    record(&store, key, AgentState::Missing, EventKind::AgentMissing, detail).await;
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn record(
    store: &Store,
    key: AgentKey,
    state: AgentState,
    kind: EventKind,
    detail: serde_json::Value,
) {
    let result: Result<(), StoreError> = store
        .run(move |s| s.transition(&key, state, kind, &detail, now_ms()))
        .await;
    if let Err(e) = result {
        // The in-memory state has moved on; the store will catch up with
        // the next transition. Say so loudly.
        tracing::error!(error = %e, "cannot record liveness event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventQuery, Scope, SessionInfo};
    use std::path::Path;

    fn key(n: &str) -> AgentKey {
        AgentKey {
            tenant: "t".into(),
            name: n.into(),
        }
    }

    fn kinds(store: &Store) -> Vec<(String, EventKind)> {
        let q = EventQuery {
            limit: 100,
            ..EventQuery::default()
        };
        store
            .events(&Scope::All, &q)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind != EventKind::AgentRegistered)
            .map(|e| (e.agent, e.kind))
            .collect()
    }

    fn states(store: &Store) -> Vec<AgentState> {
        store
            .agents(&Scope::All)
            .unwrap()
            .into_iter()
            .map(|a| a.state)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn missing_after_grace_and_back_on_heartbeat() {
        let store = Store::open(Path::new(":memory:")).unwrap();
        store
            .session_opened(&key("a"), &SessionInfo::default(), 1, 0)
            .unwrap();
        let stop = CancellationToken::new();
        let (live, task) = Liveness::spawn(store.clone(), vec![], Duration::ZERO, stop.clone());
        let grace = Duration::from_secs(3);

        live.seen(key("a"), grace).await;
        // Heartbeats every second keep it up indefinitely.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            live.seen(key("a"), grace).await;
        }
        assert!(live.ping(Duration::from_secs(1)).await);
        assert!(kinds(&store).is_empty());

        // Silence: not missing just before the grace expires...
        tokio::time::sleep(Duration::from_millis(2999)).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert!(kinds(&store).is_empty());
        // ...missing right after.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert_eq!(kinds(&store), vec![("a".into(), EventKind::AgentMissing)]);
        assert_eq!(states(&store), vec![AgentState::Missing]);

        // Long silence produces no second event.
        tokio::time::sleep(Duration::from_secs(60)).await;
        live.seen(key("a"), grace).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert_eq!(
            kinds(&store),
            vec![
                ("a".into(), EventKind::AgentMissing),
                ("a".into(), EventKind::AgentBack)
            ]
        );
        assert_eq!(states(&store), vec![AgentState::Up]);
        let back = store
            .events(
                &Scope::All,
                &EventQuery {
                    limit: 10,
                    ..EventQuery::default()
                },
            )
            .unwrap();
        // Missing began exactly at the deadline (3 s after the last heartbeat);
        // the heartbeat came 60.001 s later.
        assert_eq!(back.last().unwrap().detail["missing_for_ms"], 60_001);

        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn restart_gives_up_agents_grace_plus_the_restart_allowance_and_keeps_missing_ones() {
        let store = Store::open(Path::new(":memory:")).unwrap();
        for n in ["up", "gone"] {
            store
                .session_opened(&key(n), &SessionInfo::default(), 1, 0)
                .unwrap();
        }
        store
            .transition(
                &key("gone"),
                AgentState::Missing,
                EventKind::AgentMissing,
                &json!({}),
                0,
            )
            .unwrap();
        let known = vec![
            (key("up"), AgentState::Up, 5_000),
            (key("gone"), AgentState::Missing, 5_000),
        ];
        let stop = CancellationToken::new();
        // With a restart allowance of 30 s on top of the 5 s grace.
        let (live, _task) =
            Liveness::spawn(store.clone(), known, Duration::from_secs(30), stop.clone());
        tokio::time::sleep(Duration::from_millis(34_900)).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert_eq!(
            kinds(&store),
            vec![("gone".into(), EventKind::AgentMissing)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert_eq!(
            kinds(&store),
            vec![
                ("gone".into(), EventKind::AgentMissing),
                ("up".into(), EventKind::AgentMissing)
            ]
        );
        live.seen(key("gone"), Duration::from_secs(5)).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert_eq!(
            kinds(&store).last().unwrap(),
            &("gone".into(), EventKind::AgentBack)
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn ping_fails_when_the_task_is_gone() {
        let store = Store::open(Path::new(":memory:")).unwrap();
        let stop = CancellationToken::new();
        let (live, task) = Liveness::spawn(store, vec![], Duration::ZERO, stop.clone());
        stop.cancel();
        task.await.unwrap();
        assert!(!live.ping(Duration::from_secs(1)).await);
    }
}
