//! Missing-heartbeat detection.
//!
//! One task owns a deadline per known agent (last sign of life + grace).
//! Sessions report every hello and heartbeat with [`Liveness::seen`]; when a
//! deadline passes the agent becomes *missing*, and the next sign of life
//! makes it *back*. Both transitions are written to the store with their
//! event in one transaction, in the order they happen.
//!
//! An agent with a monitoring schedule (`[[agent]] schedule`, an
//! `[[alerting.schedule]]`) whose deadline passes while the schedule is
//! closed is *off-hours* instead (`agent-off-hours`, no alert): a host that
//! is switched off in the evening pages nobody. When the schedule opens it
//! is expected from then (`agent-on-hours`), and missing after its grace if
//! it stays silent; a sign of life ends off-hours at once. An agent that
//! is already missing when its window closes stays missing.
//!
//! Deadlines use tokio's clock, so tests drive them with a paused clock
//! (schedules read the wall clock through [`Clock`], which follows it).
//! After a collector restart every agent that was up gets its grace plus
//! `heartbeat.restart-grace` (default 45 s) before it can be missing: its
//! sessions broke when the collector stopped and it reconnects with its
//! backoff (up to `reconnect.max`, 30 s by default), so a plain grace would
//! page healthy agents on most restarts. An agent gone for good is declared
//! missing at most grace + restart-grace after the start. Agents that were
//! missing stay missing until they speak. (An agent moving to another
//! collector of a cluster will be given the same allowance.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::consumers::alert::schedule::Schedule;
use crate::consumers::analysis::Clock;
use crate::store::{AgentKey, AgentState, EventKind, Store, StoreError, now_ms};

/// Each agent's monitoring schedule (`None`: always watched).
pub type Schedules = Arc<dyn Fn(&AgentKey) -> Option<Schedule> + Send + Sync>;

/// Handle to the liveness task.
#[derive(Debug, Clone)]
pub struct Liveness {
    tx: mpsc::Sender<Command>,
}

#[derive(Debug)]
enum Command {
    Seen {
        key: AgentKey,
        grace: Duration,
    },
    /// A new grace for `key`, applied to its current deadline (no sign of
    /// life).
    Policy {
        key: AgentKey,
        grace: Duration,
    },
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
    /// Silent outside its schedule since then, until its schedule opens
    /// (worked out once, when it went off-hours: schedules are not
    /// evaluated on every heartbeat of every agent).
    off_hours_since: Option<Instant>,
    reopens: Instant,
    /// When its schedule last opened with it silent: it is expected from
    /// then, not from its last heartbeat.
    opened: Option<Instant>,
}

impl Entry {
    fn deadline(&self) -> Instant {
        self.last_seen.max(self.opened.unwrap_or(self.last_seen)) + self.grace + self.allowance
    }

    fn watched(&self) -> bool {
        self.missing_since.is_none() && self.off_hours_since.is_none()
    }
}

/// Wall-clock time and schedules for the task.
struct Calendar {
    clock: Clock,
    schedules: Schedules,
}

impl Calendar {
    /// When, on tokio's clock, `key`'s closed schedule opens next (now if
    /// it has no schedule or is open).
    fn opening(&self, key: &AgentKey, now: Instant) -> Instant {
        let now_ms = self.clock.now_ms();
        match (self.schedules)(key) {
            Some(s) if !s.is_open(now_ms) => s
                .next_change(now_ms)
                .map_or(now + Duration::from_secs(86_400), |at| {
                    now + Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0))
                }),
            _ => now,
        }
    }

    /// Whether `key`'s schedule is closed now.
    fn closed(&self, key: &AgentKey) -> bool {
        (self.schedules)(key).is_some_and(|s| !s.is_open(self.clock.now_ms()))
    }
}

impl Liveness {
    /// Starts the task with the agents known to the store; those that were
    /// up get `restart_grace` on top of their grace to reconnect. No
    /// agent has a schedule.
    pub fn spawn(
        store: Store,
        known: Vec<(AgentKey, AgentState, u64)>,
        restart_grace: Duration,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        Self::spawn_with(
            store,
            known,
            restart_grace,
            Clock::new(),
            Arc::new(|_| None),
            shutdown,
        )
    }

    /// As [`Self::spawn`], with each agent's monitoring schedule from
    /// `schedules`, read at every decision (a reload applies at once).
    pub fn spawn_with(
        store: Store,
        known: Vec<(AgentKey, AgentState, u64)>,
        restart_grace: Duration,
        clock: Clock,
        schedules: Schedules,
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
                    off_hours_since: (state == AgentState::OffHours).then_some(now),
                    reopens: now,
                    opened: None,
                };
                (key, entry)
            })
            .collect();
        let calendar = Calendar { clock, schedules };
        let task = tokio::spawn(run(store, agents, calendar, rx, shutdown));
        (Self { tx }, task)
    }

    /// Reports a sign of life from `key`, whose grace period is `grace`.
    pub async fn seen(&self, key: AgentKey, grace: Duration) {
        // The task only stops at shutdown; a lost report then is harmless.
        let _ = self.tx.send(Command::Seen { key, grace }).await;
    }

    /// Applies a changed grace to `key` at once (its settings changed):
    /// the deadline moves, the last sign of life stays.
    pub async fn policy(&self, key: AgentKey, grace: Duration) {
        let _ = self.tx.send(Command::Policy { key, grace }).await;
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

/// A sign of life from `key`.
async fn seen(
    store: &Store,
    agents: &mut HashMap<AgentKey, Entry>,
    key: AgentKey,
    grace: Duration,
) {
    let now = Instant::now();
    let entry = agents.entry(key.clone()).or_insert(Entry {
        last_seen: now,
        grace,
        allowance: Duration::ZERO,
        missing_since: None,
        off_hours_since: None,
        reopens: now,
        opened: None,
    });
    entry.last_seen = now;
    entry.grace = grace;
    entry.allowance = Duration::ZERO;
    entry.opened = None;
    if let Some(since) = entry.missing_since.take() {
        let detail = json!({ "missing_for_ms": millis(now - since) });
        tracing::info!(agent = %key, missing_for = ?(now - since), "agent is back");
        record(store, key, AgentState::Up, EventKind::AgentBack, detail).await;
    } else if let Some(since) = entry.off_hours_since.take() {
        let detail = json!({ "reason": "heartbeat", "off_hours_for_ms": millis(now - since) });
        tracing::info!(agent = %key, "off-hours agent spoke again");
        record(store, key, AgentState::Up, EventKind::AgentOnHours, detail).await;
    }
}

/// Deadlines and openings due by now.
async fn expire(store: &Store, agents: &mut HashMap<AgentKey, Entry>, calendar: &Calendar) {
    let now = Instant::now();
    let due: Vec<AgentKey> = agents
        .iter()
        .filter(|(_, e)| e.off_hours_since.is_some() && e.reopens <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        let Some(entry) = agents.get_mut(&key) else {
            continue;
        };
        // Still closed (its schedule changed, or opens beyond the horizon
        // looked at): wait for the next opening.
        let opens = calendar.opening(&key, now);
        if opens > now {
            entry.reopens = opens;
            continue;
        }
        entry.off_hours_since = None;
        entry.opened = Some(now);
        tracing::info!(agent = %key, "schedule opened: agent expected within its grace");
        let detail = json!({ "reason": "schedule opened", "grace_ms": millis(entry.grace) });
        record(store, key, AgentState::Up, EventKind::AgentOnHours, detail).await;
    }
    let expired: Vec<AgentKey> = agents
        .iter()
        .filter(|(_, e)| e.watched() && e.deadline() <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in expired {
        let Some(entry) = agents.get_mut(&key) else {
            continue;
        };
        let silent = now - entry.last_seen;
        let mut detail = json!({
            "silent_for_ms": millis(silent),
            "grace_ms": millis(entry.grace),
        });
        if calendar.closed(&key) {
            entry.off_hours_since = Some(now);
            entry.reopens = calendar.opening(&key, now);
            tracing::info!(agent = %key, silent_for = ?silent, "agent is silent outside its schedule: off-hours");
            record(
                store,
                key,
                AgentState::OffHours,
                EventKind::AgentOffHours,
                detail,
            )
            .await;
            continue;
        }
        entry.missing_since = Some(now);
        if !entry.allowance.is_zero() {
            // Not heard from since the collector started.
            detail["restart_grace_ms"] = json!(millis(entry.allowance));
        }
        tracing::warn!(agent = %key, silent_for = ?silent, grace = ?entry.grace, "agent is missing");
        record(
            store,
            key,
            AgentState::Missing,
            EventKind::AgentMissing,
            detail,
        )
        .await;
    }
}

async fn run(
    store: Store,
    mut agents: HashMap<AgentKey, Entry>,
    calendar: Calendar,
    mut rx: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) {
    loop {
        let next = agents
            .values()
            .filter_map(|e| {
                if e.watched() {
                    Some(e.deadline())
                } else if e.off_hours_since.is_some() {
                    Some(e.reopens)
                } else {
                    None
                }
            })
            .min();
        let wake = async {
            match next {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Deadlines that have passed are acted on before the next
        // command: a ping answered after a deadline reflects it.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = wake => expire(&store, &mut agents, &calendar).await,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Ping(reply)) => { let _ = reply.send(()); }
                Some(Command::Seen { key, grace }) => seen(&store, &mut agents, key, grace).await,
                Some(Command::Policy { key, grace }) => {
                    // A changed schedule is looked at again now.
                    if let Some(e) = agents.get_mut(&key) {
                        e.grace = grace;
                        e.reopens = Instant::now();
                    }
                }
            },
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

    /// An agent `t/NAME` with schedule `office` (Europe/Paris, weekdays
    /// 09:00–18:00) or `night` (every day 22:00–06:00), grace 30 s, on a
    /// clock that reads `at_ms`; gives its liveness and the store.
    fn scheduled(at_ms: i64) -> (Liveness, Store, CancellationToken) {
        let config: crate::Config = sonde_runtime::config::Source::from_text(
            Path::new("t.toml"),
            "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
             [[agent]]\ntenant = \"t\"\nname = \"office\"\nschedule = \"office\"\n\
             [[agent]]\ntenant = \"t\"\nname = \"night\"\nschedule = \"night\"\n\
             [[alerting.schedule]]\nname = \"office\"\ntimezone = \"Europe/Paris\"\n\
             days = [\"mon-fri\"]\nstart = \"09:00\"\nend = \"18:00\"\n\
             [[alerting.schedule]]\nname = \"night\"\ntimezone = \"Europe/Paris\"\n\
             days = [\"mon-sun\"]\nstart = \"22:00\"\nend = \"06:00\"\n"
                .to_owned(),
        )
        .parse()
        .unwrap();
        let store = Store::open(Path::new(":memory:")).unwrap();
        for n in ["office", "night", "plain"] {
            store
                .session_opened(&key(n), &SessionInfo::default(), 1, 0)
                .unwrap();
        }
        let stop = CancellationToken::new();
        let schedules: Schedules = Arc::new(move |k| config.agent_schedule(&k.tenant, &k.name));
        let (live, _task) = Liveness::spawn_with(
            store.clone(),
            vec![],
            Duration::ZERO,
            Clock::at(at_ms * 1_000_000),
            schedules,
            stop.clone(),
        );
        (live, store, stop)
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        use chrono::TimeZone as _;
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis()
    }

    const GRACE: Duration = Duration::from_secs(30);
    const MS: Duration = Duration::from_millis(1);

    /// Heartbeats of `names` every 10 s for `minutes`.
    async fn beat(live: &Liveness, names: &[&str], minutes: u64) {
        for _ in 0..minutes * 6 {
            for n in names {
                live.seen(key(n), GRACE).await;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        for n in names {
            live.seen(key(n), GRACE).await;
        }
    }

    /// Advances to `at` after the start and lets the task act.
    async fn until(live: &Liveness, t0: Instant, at: Duration) {
        tokio::time::sleep_until(t0 + at).await;
        assert!(live.ping(Duration::from_secs(1)).await);
    }

    fn state_of(store: &Store, name: &str) -> AgentState {
        store
            .agents(&Scope::All)
            .unwrap()
            .into_iter()
            .find(|a| a.name == name)
            .unwrap()
            .state
    }

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn an_office_agent_stopped_in_the_evening_is_off_hours_and_missing_next_morning_after_its_grace()
     {
        // Tuesday 2026-12-08, 17:00 in Paris (16:00 UTC).
        let (live, store, stop) = scheduled(utc(2026, 12, 8, 16, 0));
        let t0 = Instant::now();
        // Up all afternoon, stopped at 18:30.
        beat(&live, &["office"], 90).await;
        until(&live, t0, (90 * MIN + GRACE).saturating_sub(MS)).await;
        assert!(kinds(&store).is_empty());
        until(&live, t0, 90 * MIN + GRACE).await;
        assert_eq!(kinds(&store), [("office".into(), EventKind::AgentOffHours)]);
        assert_eq!(state_of(&store, "office"), AgentState::OffHours);
        // All night: nothing. 09:00 the next morning is 16 h after t0.
        until(&live, t0, (16 * HOUR).saturating_sub(MS)).await;
        assert_eq!(kinds(&store).len(), 1);
        until(&live, t0, 16 * HOUR).await;
        assert_eq!(kinds(&store)[1], ("office".into(), EventKind::AgentOnHours));
        assert_eq!(state_of(&store, "office"), AgentState::Up);
        until(&live, t0, (16 * HOUR + GRACE).saturating_sub(MS)).await;
        assert_eq!(kinds(&store).len(), 2);
        until(&live, t0, 16 * HOUR + GRACE).await;
        assert_eq!(kinds(&store)[2], ("office".into(), EventKind::AgentMissing));
        // Back when it speaks; no second missing.
        until(&live, t0, 17 * HOUR).await;
        live.seen(key("office"), GRACE).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert_eq!(kinds(&store)[3], ("office".into(), EventKind::AgentBack));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_october_change_weekend_the_office_opens_at_nine_paris_time() {
        // Friday 2026-10-23 17:00 CEST (15:00 UTC); clocks go back on the
        // Sunday; Monday 09:00 CET is 08:00 UTC, 65 h after t0 (not 64 h,
        // where 09:00 CEST would be).
        let (live, store, stop) = scheduled(utc(2026, 10, 23, 15, 0));
        let t0 = Instant::now();
        beat(&live, &["office"], 90).await;
        until(&live, t0, 90 * MIN + GRACE).await;
        assert_eq!(kinds(&store), [("office".into(), EventKind::AgentOffHours)]);
        until(&live, t0, 64 * HOUR + GRACE).await;
        assert_eq!(kinds(&store).len(), 1, "not at 09:00 summer time");
        until(&live, t0, (65 * HOUR).saturating_sub(MS)).await;
        assert_eq!(kinds(&store).len(), 1);
        until(&live, t0, 65 * HOUR + GRACE).await;
        assert_eq!(
            kinds(&store)[1..],
            [
                ("office".into(), EventKind::AgentOnHours),
                ("office".into(), EventKind::AgentMissing)
            ]
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_night_window_over_midnight_and_an_agent_missing_when_its_window_closes() {
        // 2026-12-08 04:00 in Paris (03:00 UTC); the night window ends at
        // 06:00 and opens again at 22:00.
        let (live, store, stop) = scheduled(utc(2026, 12, 8, 3, 0));
        let t0 = Instant::now();
        // Stopped at 05:00, inside its window: missing after the grace, and
        // still missing when the window closes at 06:00 and all day.
        beat(&live, &["night"], 60).await;
        until(&live, t0, HOUR + GRACE).await;
        assert_eq!(kinds(&store), [("night".into(), EventKind::AgentMissing)]);
        until(&live, t0, 20 * HOUR).await;
        assert_eq!(kinds(&store).len(), 1);
        assert_eq!(state_of(&store, "night"), AgentState::Missing);
        // Back at 00:00 (inside), stopped at 06:30 (outside): off-hours;
        // a heartbeat at 12:00 ends it at once.
        live.seen(key("night"), GRACE).await;
        beat(&live, &["night"], 6 * 60 + 30).await;
        until(&live, t0, 20 * HOUR + 6 * HOUR + 30 * MIN + GRACE).await;
        assert_eq!(
            kinds(&store)[1..],
            [
                ("night".into(), EventKind::AgentBack),
                ("night".into(), EventKind::AgentOffHours)
            ]
        );
        until(&live, t0, 32 * HOUR).await;
        live.seen(key("night"), GRACE).await;
        assert!(live.ping(Duration::from_secs(1)).await);
        assert_eq!(kinds(&store)[3], ("night".into(), EventKind::AgentOnHours));
        let ev = store
            .events(
                &Scope::All,
                &EventQuery {
                    limit: 100,
                    ..EventQuery::default()
                },
            )
            .unwrap();
        assert_eq!(ev.last().unwrap().detail["reason"], "heartbeat");
        // Silent again at noon: off-hours again; an agent without a
        // schedule silent as long is missing (whatever the hour).
        live.seen(key("plain"), GRACE).await;
        until(&live, t0, 32 * HOUR + GRACE + MS).await;
        let mut last: Vec<(String, EventKind)> = kinds(&store)[4..].to_vec();
        last.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            last,
            [
                ("night".into(), EventKind::AgentOffHours),
                ("plain".into(), EventKind::AgentMissing)
            ]
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
