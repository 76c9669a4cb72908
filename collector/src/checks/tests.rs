//! The monitor with a real store and tokio's paused clock: deadlines,
//! events, pings, limits, rotation, failures and restarts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::define::CheckRequest;
use super::monitor::{Lookup, Monitor, Outcome, Ping};
use super::state::State;
use super::store::{self as checks_store, Change, Check, PingKind, PingRow};
use super::token;
use crate::config::Config;
use crate::consumers::analysis::Clock;
use crate::store::{EventKind, EventQuery, Scope, Store};

const SYNC: Duration = Duration::from_secs(5);

fn config(extra: &str) -> Config {
    sonde_runtime::config::Source::from_text(
        Path::new("t.toml"),
        format!(
            "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n{extra}\n\
             [[alerting.schedule]]\nname = \"office\"\ntimezone = \"Europe/Paris\"\n\
             days = [\"mon-fri\"]\nstart = \"09:00\"\nend = \"18:00\"\n"
        ),
    )
    .parse()
    .unwrap()
}

struct Rig {
    dir: tempfile::TempDir,
    store: Store,
    config: Config,
    clock: Clock,
    monitor: Monitor,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn new(at_ms: i64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        Self::on(dir, store, config(""), at_ms).await
    }

    async fn on(dir: tempfile::TempDir, store: Store, config: Config, at_ms: i64) -> Self {
        let clock = Clock::at(at_ms * 1_000_000);
        let stop = CancellationToken::new();
        let (_tx, rx) = watch::channel(Arc::new(config.clone()));
        let (monitor, task) = Monitor::spawn(store.clone(), rx, clock, stop.clone())
            .await
            .unwrap();
        Self {
            dir,
            store,
            config,
            clock,
            monitor,
            stop,
            task,
        }
    }

    /// The collector stops (as at a kill: nothing is flushed that was not
    /// already) and starts again `after` later.
    async fn restart(self, after: Duration) -> Self {
        self.stop.cancel();
        self.task.await.unwrap();
        let now = self.clock.now_ms() + i64::try_from(after.as_millis()).unwrap();
        tokio::time::advance(after).await;
        let store = self.store.clone();
        Self::on(self.dir, store, self.config, now).await
    }

    /// Adds a check; gives it and its token.
    async fn add(&self, req: CheckRequest) -> (Check, String) {
        let (name, slug, spec) = req.validate(&self.config).unwrap();
        let ch = Change {
            name,
            slug,
            spec,
            author: "sonde://t/admin/a".into(),
            at_ms: self.clock.now_ms(),
        };
        let t = token::new_token();
        let c = checks_store::insert(&self.store, "t", &ch, &token::hash(&t)).unwrap();
        self.monitor.reload(c.id).await.unwrap();
        (c, t)
    }

    async fn ping(&self, token: &str, kind: PingKind, exit: Option<i64>) -> Outcome {
        self.monitor
            .ping(Ping {
                lookup: Lookup::Token(token::hash(token)),
                row: PingRow {
                    id: 0,
                    at_ms: 0,
                    kind,
                    exit_status: exit,
                    source: "127.0.0.1".into(),
                    method: "GET".into(),
                    user_agent: "curl/7.88.1".into(),
                    body: String::new(),
                    duration_ms: None,
                },
            })
            .await
            .unwrap()
    }

    async fn wait(&self, d: Duration) {
        tokio::time::advance(d).await;
        assert!(self.monitor.sync(SYNC).await);
    }

    fn state(&self, id: i64) -> State {
        let c = checks_store::get(&self.store, id).unwrap().unwrap();
        c.spec
            .expectation(&self.config)
            .judge(&c.received(), self.clock.now_ms())
            .state
    }

    /// Check events but first pings (`check-up` from new or paused),
    /// pauses and resumes.
    fn events(&self) -> Vec<(EventKind, i64)> {
        let q = EventQuery {
            limit: 1000,
            ..EventQuery::default()
        };
        self.store
            .events(&Scope::All, &q)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str().starts_with("check-"))
            // What these tests follow; `all_events` has the rest.
            .filter(|e| e.detail["was"] != "new" && e.detail["was"] != "paused")
            .filter(|e| !matches!(e.kind, EventKind::CheckPaused | EventKind::CheckResumed))
            .map(|e| (e.kind, e.at_ms))
            .collect()
    }

    /// Every check event: kind and the state it left (`was`).
    fn all_events(&self) -> Vec<(EventKind, String)> {
        let q = EventQuery {
            limit: 1000,
            ..EventQuery::default()
        };
        self.store
            .events(&Scope::All, &q)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str().starts_with("check-"))
            .map(|e| (e.kind, e.detail["was"].as_str().unwrap_or("").to_owned()))
            .collect()
    }
}

fn simple(name: &str, period: &str, grace: &str) -> CheckRequest {
    CheckRequest {
        name: name.into(),
        period: Some(period.into()),
        grace: Some(grace.into()),
        ..CheckRequest::default()
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp_millis()
}

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_silent_check_is_late_then_down_once_and_a_ping_brings_it_up() {
    let t0 = utc(2026, 12, 7, 12, 0);
    let rig = Rig::new(t0).await;
    let (c, tok) = rig.add(simple("backup", "10s", "5s")).await;
    assert_eq!(rig.state(c.id), State::New);
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    assert_eq!(rig.state(c.id), State::Up);
    rig.wait((10 * S).saturating_sub(MS)).await;
    assert_eq!(rig.state(c.id), State::Up);
    rig.wait(MS).await;
    assert_eq!(rig.state(c.id), State::Late);
    assert!(rig.events().is_empty(), "late is no event");
    rig.wait((5 * S).saturating_sub(MS)).await;
    assert!(rig.events().is_empty());
    rig.wait(MS).await;
    assert_eq!(rig.state(c.id), State::Down);
    assert_eq!(rig.events(), [(EventKind::CheckDown, t0 + 15_000)]);
    // Down stays down, once.
    rig.wait(600 * S).await;
    assert_eq!(rig.events().len(), 1);
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    assert_eq!(rig.state(c.id), State::Up);
    assert_eq!(
        rig.events(),
        [
            (EventKind::CheckDown, t0 + 15_000),
            (EventKind::CheckUp, t0 + 615_000)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_are_down_at_once_and_a_started_run_records_its_duration() {
    let t0 = utc(2026, 12, 7, 12, 0);
    let rig = Rig::new(t0).await;
    let (c, tok) = rig.add(simple("job", "1h", "10m")).await;
    assert_eq!(
        rig.ping(&tok, PingKind::Start, None).await,
        Outcome::Recorded
    );
    rig.wait(42 * S).await;
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    let stored = checks_store::get(&rig.store, c.id).unwrap().unwrap();
    assert_eq!(stored.last_duration_ms, Some(42_000));
    assert_eq!(stored.started_ms, None);
    let pings = checks_store::pings(&rig.store, c.id, 10, None).unwrap();
    assert_eq!(pings[0].duration_ms, Some(42_000));
    assert_eq!(pings[1].kind, PingKind::Start);
    // `/1` is a failure with its exit status, at once.
    assert_eq!(
        rig.ping(&tok, PingKind::Fail, Some(1)).await,
        Outcome::Recorded
    );
    assert_eq!(rig.state(c.id), State::Down);
    let kinds: Vec<EventKind> = rig.events().into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, [EventKind::CheckStarted, EventKind::CheckFailed]);
    // A second failure while down is logged, not a second event.
    assert_eq!(
        rig.ping(&tok, PingKind::Fail, None).await,
        Outcome::Recorded
    );
    assert_eq!(rig.events().len(), 2);
    // A log ping changes nothing but the log.
    assert_eq!(rig.ping(&tok, PingKind::Log, None).await, Outcome::Recorded);
    assert_eq!(rig.state(c.id), State::Down);
    assert_eq!(
        checks_store::pings(&rig.store, c.id, 10, None)
            .unwrap()
            .len(),
        5
    );
    // A started run that never ends is down after the grace.
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    assert_eq!(
        rig.ping(&tok, PingKind::Start, None).await,
        Outcome::Recorded
    );
    rig.wait(10 * 60 * S).await;
    assert_eq!(rig.state(c.id), State::Down);
    let last = rig.events().last().copied().unwrap();
    assert_eq!(last.0, EventKind::CheckDown);
}

#[tokio::test(start_paused = true)]
async fn a_cron_check_across_the_october_change_in_paris() {
    // 2026-10-25: at 03:00 CEST (01:00 UTC) clocks go back to 02:00 CET.
    let t0 = utc(2026, 10, 25, 0, 50);
    let rig = Rig::new(t0).await;
    let req = CheckRequest {
        name: "every-2".into(),
        cron: Some("*/2 * * * *".into()),
        timezone: Some("Europe/Paris".into()),
        grace: Some("30s".into()),
        ..CheckRequest::default()
    };
    let (c, tok) = rig.add(req).await;
    // A ping at every tick, in real time every 2 minutes through the
    // repeated hour: never late, never down.
    let mut now = t0;
    for _ in 0..20 {
        assert_eq!(
            rig.ping(&tok, PingKind::Success, None).await,
            Outcome::Recorded
        );
        rig.wait(2 * 60 * S).await;
        now += 120_000;
        assert_eq!(rig.state(c.id), State::Late, "at {now}: the tick is due");
    }
    assert!(rig.events().is_empty());
    // 02:30 CET (01:30 UTC), the second 02:30 of the night: the last ping
    // was at 01:28 UTC, the tick is due now; silent from here, down at
    // the tick + 30 s, not before (not an hour later, as a clock that
    // waited for the next wall-clock 02:30 would have it).
    assert_eq!(now, utc(2026, 10, 25, 1, 30));
    rig.wait((30 * S).saturating_sub(MS)).await;
    assert_eq!(rig.state(c.id), State::Late);
    rig.wait(MS).await;
    assert_eq!(rig.events(), [(EventKind::CheckDown, now + 30_000)]);
}

#[tokio::test(start_paused = true)]
async fn limits_hold_back_one_check_and_never_the_others() {
    let rig = Rig::new(utc(2026, 12, 7, 12, 0)).await;
    let (a, tok_a) = rig.add(simple("a", "1h", "1h")).await;
    let (_, tok_b) = rig.add(simple("b", "1h", "1h")).await;
    let mut outcomes = Vec::new();
    for _ in 0..25 {
        outcomes.push(rig.ping(&tok_a, PingKind::Success, None).await);
    }
    let recorded = outcomes.iter().filter(|o| **o == Outcome::Recorded).count();
    let limited = outcomes.iter().filter(|o| **o == Outcome::Limited).count();
    assert_eq!((recorded, limited), (20, 5));
    assert_eq!(
        rig.ping(&tok_b, PingKind::Success, None).await,
        Outcome::Recorded
    );
    assert_eq!(
        checks_store::pings(&rig.store, a.id, 100, None)
            .unwrap()
            .len(),
        20
    );
    // An unknown token is unknown.
    assert_eq!(
        rig.ping(&token::new_token(), PingKind::Success, None).await,
        Outcome::Unknown
    );
}

#[tokio::test(start_paused = true)]
async fn a_rotated_token_is_unknown_at_once_and_the_new_one_works() {
    let rig = Rig::new(utc(2026, 12, 7, 12, 0)).await;
    let (c, old) = rig.add(simple("a", "1h", "1h")).await;
    assert_eq!(
        rig.ping(&old, PingKind::Success, None).await,
        Outcome::Recorded
    );
    let new = token::new_token();
    checks_store::rotate(&rig.store, c.id, &token::hash(&new), "x", 0).unwrap();
    rig.monitor.reload(c.id).await.unwrap();
    assert_eq!(
        rig.ping(&old, PingKind::Success, None).await,
        Outcome::Unknown
    );
    assert_eq!(
        rig.ping(&new, PingKind::Success, None).await,
        Outcome::Recorded
    );
    // Deleted: unknown too.
    checks_store::delete(&rig.store, c.id).unwrap();
    rig.monitor.reload(c.id).await.unwrap();
    assert_eq!(
        rig.ping(&new, PingKind::Success, None).await,
        Outcome::Unknown
    );
}

#[tokio::test(start_paused = true)]
async fn a_ping_the_store_cannot_take_is_refused_and_changes_nothing() {
    let rig = Rig::new(utc(2026, 12, 7, 12, 0)).await;
    let (c, tok) = rig.add(simple("a", "1h", "1h")).await;
    rig.store
        .with(|c| c.execute_batch("PRAGMA query_only = 1"))
        .unwrap();
    assert_eq!(rig.ping(&tok, PingKind::Fail, None).await, Outcome::Failed);
    rig.store
        .with(|c| c.execute_batch("PRAGMA query_only = 0"))
        .unwrap();
    assert_eq!(rig.state(c.id), State::New);
    assert!(rig.events().is_empty());
    // The monitor was put back as stored: the failure counts when sent again.
    assert_eq!(
        rig.ping(&tok, PingKind::Fail, None).await,
        Outcome::Recorded
    );
    assert_eq!(rig.events().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_states_pings_and_deadlines_are_intact_and_down_comes_once() {
    let t0 = utc(2026, 12, 7, 12, 0);
    let rig = Rig::new(t0).await;
    let (c, tok) = rig.add(simple("nightly", "1m", "30s")).await;
    let (p, _) = rig.add(simple("paused", "1m", "30s")).await;
    assert!(rig.monitor.set_paused(p.id, true).await.unwrap().unwrap());
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    // Down 20 s, back up before the deadline: still up, its deadline kept.
    let rig = rig.restart(20 * S).await;
    assert_eq!(rig.state(c.id), State::Up);
    rig.wait((70 * S).saturating_sub(MS)).await;
    assert!(rig.events().is_empty());
    rig.wait(MS).await;
    assert_eq!(rig.events(), [(EventKind::CheckDown, t0 + 90_000)]);
    // Due while stopped: down once at start, not again at the next.
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    let rig = rig.restart(10 * 60 * S).await;
    assert!(rig.monitor.sync(SYNC).await);
    let rig = rig.restart(10 * 60 * S).await;
    assert!(rig.monitor.sync(SYNC).await);
    let kinds: Vec<EventKind> = rig.events().into_iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        [
            EventKind::CheckDown,
            EventKind::CheckUp,
            EventKind::CheckDown
        ]
    );
    assert_eq!(rig.state(p.id), State::Paused);
    assert_eq!(
        checks_store::pings(&rig.store, c.id, 10, None)
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn first_pings_pauses_and_resumes_are_events_too() {
    let rig = Rig::new(utc(2026, 12, 7, 12, 0)).await;
    let (c, tok) = rig.add(simple("a", "1h", "1h")).await;
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    assert!(rig.monitor.set_paused(c.id, true).await.unwrap().unwrap());
    assert!(rig.monitor.set_paused(c.id, false).await.unwrap().unwrap());
    assert!(rig.monitor.set_paused(c.id, true).await.unwrap().unwrap());
    // A ping to a paused check resumes it: up.
    assert_eq!(
        rig.ping(&tok, PingKind::Success, None).await,
        Outcome::Recorded
    );
    assert_eq!(rig.state(c.id), State::Up);
    let up = |was: &str| (EventKind::CheckUp, was.to_owned());
    assert_eq!(
        rig.all_events(),
        [
            up("new"),
            (EventKind::CheckPaused, String::new()),
            (EventKind::CheckResumed, String::new()),
            (EventKind::CheckPaused, String::new()),
            up("paused"),
        ]
    );
}
