//! Alerting: from the collector's events (and a few measured conditions)
//! to notifications on Discord, mail and SMS, once, on the right channel.
//!
//! ```text
//! events table ──► rules.rs ──► Update ──► engine.rs: alerts (flapping)
//! minute buckets ─► latency ─┘                 │
//! no data received ──────────┘                 ▼
//!                              routes + groups (dispatch.rs), silences,
//!                              dependencies (suppress.rs), schedules
//!                                              │ one transaction with the
//!                                              ▼ events cursor
//!                              notifications outbox (state.rs)
//!                                              │
//!                              notify.rs: per receiver integration,
//!                              in order, retried with backoff
//!                                              ▼
//!                              receiver/{discord,email,twilio,webhook}.rs
//! ```
//!
//! The engine follows the event log through the one consumer driver
//! (`log/consumer.rs`: woken when a write adds events, by its timers, and
//! by a kick for silences and reloads; it keeps the silences and reads
//! them again only when they change, so an idle collector's alerting reads
//! nothing) with a durable cursor, and commits, in one `SQLite` transaction, the alerts it changed, the groups
//! it flushed, the notifications those produced and the cursor: a restart
//! neither repeats a notification nor misses a resolution. Notifications
//! sit in an outbox until their receiver accepted them; a collector killed
//! between a receiver's acceptance and the outbox update sends that one
//! notification again (at-least-once, the only duplicate possible).

pub mod config;
pub mod cron;
pub mod deadman;
pub mod dispatch;
pub mod engine;
pub mod latency;
pub mod matcher;
pub mod message;
pub mod notify;
pub mod receiver;
pub mod rules;
pub mod schedule;
pub mod silence;
pub mod state;
pub mod suppress;
#[cfg(test)]
mod tests;
pub mod view;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumers::analysis::Clock;
use crate::store::{Store, StoreError};
use rules::Update;

pub use config::{Alerting, Severity};
pub use matcher::{Labels, Matcher};

/// The events cursor of the alert engine.
pub const CURSOR: &str = "alerts";

/// One alert: a condition about one thing, identified by its labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable hash of the labels (severity excluded): the same condition
    /// about the same thing has the same fingerprint across restarts and
    /// versions.
    pub fingerprint: String,
    /// `tenant`, `rule`, `severity`, and what the rule is about (`agent`,
    /// `target`, `prefix`, `scope`, `port`, …).
    pub labels: Labels,
    pub severity: Severity,
    pub summary: String,
    /// API path of the object (the receiver puts `external-url` first).
    pub link: String,
    pub firing: bool,
    /// Counts the times it started firing: a group notifies an
    /// occurrence once.
    #[serde(default)]
    pub occurrence: u64,
    pub starts_ms: i64,
    pub ends_ms: Option<i64>,
    pub updated_ms: i64,
    /// A one-off change (route, public IP, remote ports): no resolved
    /// message; it leaves the firing list at this time.
    #[serde(default)]
    pub oneshot_until_ms: Option<i64>,
    /// Times of its recent state changes (flap damping).
    #[serde(default)]
    pub flips: Vec<i64>,
    #[serde(default)]
    pub flapping: bool,
    /// What the event said, for the message.
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl Alert {
    pub fn tenant(&self) -> &str {
        self.labels.get("tenant").map_or("", String::as_str)
    }

    pub fn rule(&self) -> &str {
        self.labels.get("rule").map_or("", String::as_str)
    }

    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// The fingerprint of a label set: 64-bit FNV-1a over `name=value\n` in
/// name order, severity left out, as 16 hex digits.
pub fn fingerprint(labels: &Labels) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels.iter().filter(|(k, _)| k.as_str() != "severity") {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([b'\n']) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Percent-encodes one URL path segment.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Handles shared by the alerting tasks, the sessions and the API.
#[derive(Debug, Clone)]
pub struct Handle {
    pub stats: Arc<notify::Stats>,
    /// Wakes the delivery workers (new notifications queued).
    pub deliver: Arc<Notify>,
    /// Wakes the engine (a silence was added or expired, the config was
    /// reloaded).
    pub kick: Arc<Notify>,
    /// Bumped when a silence was added or expired: the engine reads the
    /// silences again (it keeps them otherwise).
    pub silences_changed: Arc<std::sync::atomic::AtomicU64>,
    /// When anything last arrived from any agent (Unix ms by `clock`).
    pub last_received_ms: Arc<AtomicI64>,
    pub clock: Clock,
}

impl Handle {
    pub fn new(clock: Clock) -> Self {
        Self {
            stats: Arc::default(),
            deliver: Arc::default(),
            kick: Arc::default(),
            silences_changed: Arc::default(),
            last_received_ms: Arc::new(AtomicI64::new(clock.now_ms())),
            clock,
        }
    }

    /// A silence was added or expired: read them again, now.
    pub fn silences_changed(&self) {
        self.silences_changed.fetch_add(1, Ordering::Relaxed);
        self.kick.notify_one();
    }

    /// Something arrived from an agent.
    pub fn received(&self) {
        self.last_received_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
    }

    /// Whether nothing arrived for `[alerting.no-data] after`.
    pub fn no_data(&self, config: &Config) -> bool {
        config.alerting.no_data.is_some_and(|n| {
            let silent = self.clock.now_ms() - self.last_received_ms.load(Ordering::Relaxed);
            silent >= i64::try_from(n.after.as_millis()).unwrap_or(i64::MAX)
        })
    }
}

/// Resolved alerts and delivered notifications are kept this long.
const HISTORY_MS: i64 = 7 * 86_400_000;
const PRUNE_EVERY_MS: i64 = 3_600_000;

/// The engine's loop state.
struct Runner {
    store: Store,
    handle: Handle,
    engine: engine::Engine,
    cursor: i64,
    latency_unit: i64,
    /// Ids of the silences active at the last step.
    silences: Vec<i64>,
    /// The silences not yet over, as last read, and when to read them
    /// again (a change through the API, or one of them starting or
    /// ending).
    known_silences: Vec<silence::Silence>,
    silences_read: Option<(u64, i64)>,
    pruned_ms: i64,
}

impl Runner {
    async fn load(store: &Store, handle: &Handle) -> Result<(engine::Engine, i64), StoreError> {
        let since = handle.clock.now_ms() - HISTORY_MS;
        let (alerts, groups, cursor) = store.run(move |s| state::load(s, since)).await?;
        Ok((engine::Engine::new(alerts, groups), cursor))
    }

    /// Turns new events into alert updates.
    fn take_events(&mut self, config: &Config, events: &[Arc<crate::store::EventRow>], now: i64) {
        let cfg = &config.alerting;
        let tenancy = config.tenancy();
        for ev in events {
            for u in rules::from_event(config, &tenancy, ev) {
                // A one-off change older than its hold (history replayed
                // on first start) is over already.
                if let Update::Fire {
                    hold_ms: Some(h), ..
                } = &u
                    && ev.at_ms.saturating_add(*h) <= now
                {
                    continue;
                }
                self.engine.apply(cfg, u, now);
            }
            self.cursor = ev.id;
        }
    }

    /// The silences in force at `now`, read again only when they changed
    /// through the API or one of them starts or ends.
    async fn active_silences(&mut self, now: i64) -> Result<Vec<silence::Silence>, StoreError> {
        let version = self.handle.silences_changed.load(Ordering::Relaxed);
        let fresh = self
            .silences_read
            .is_some_and(|(v, until)| v == version && now < until);
        if !fresh {
            self.known_silences = self
                .store
                .run(move |s| state::silences(s, None, now))
                .await?;
            let next = self
                .known_silences
                .iter()
                .flat_map(|s| [s.starts_ms, s.ends_ms])
                .filter(|t| *t > now)
                .min()
                .unwrap_or(i64::MAX);
            self.silences_read = Some((version, next));
        }
        Ok(self
            .known_silences
            .iter()
            .filter(|s| s.active(now))
            .cloned()
            .collect())
    }

    /// Measured rules, silences, time; then commit what changed together
    /// with the cursor.
    async fn settle(&mut self, config: &Config, now: i64, moved: bool) -> Result<(), StoreError> {
        let cfg = &config.alerting;
        self.measured(config, now).await?;
        let active = self.active_silences(now).await?;
        let ids: Vec<i64> = active.iter().map(|s| s.id).collect();
        if ids != self.silences {
            self.engine.wake_groups(now);
            self.silences = ids;
        }
        self.engine.tick(cfg, &active, now);
        let firing = self.engine.alerts.values().filter(|a| a.firing).count();
        self.handle
            .stats
            .firing
            .store(u64::try_from(firing).unwrap_or(0), Ordering::Relaxed);

        let changes = self.engine.take_changes();
        if !changes.is_empty() || moved {
            let (cfg2, cursor) = (cfg.clone(), self.cursor);
            let queued = self
                .store
                .run(move |s| state::commit(s, &cfg2, &changes, cursor, now))
                .await?;
            if queued > 0 {
                tracing::info!(queued, "notifications queued");
                self.handle.deliver.notify_waiters();
            }
        }
        if now - self.pruned_ms >= PRUNE_EVERY_MS {
            self.pruned_ms = now;
            self.store
                .run(move |s| state::prune(s, now - HISTORY_MS))
                .await?;
        }
        Ok(())
    }

    /// The latency rule (once a minute) and the no-data alert.
    async fn measured(&mut self, config: &Config, now: i64) -> Result<(), StoreError> {
        let cfg = &config.alerting;
        let unit = now.div_euclid(60_000);
        if unit != self.latency_unit {
            self.latency_unit = unit;
            // Complete minutes: up to the one before the last.
            let to = unit - 1;
            let firing: Vec<Labels> = self
                .engine
                .alerts
                .values()
                .filter(|a| a.firing && a.rule() == "latency")
                .map(|a| latency::identity(&a.labels))
                .collect();
            let fires = match latency::widest(config) {
                Some(of) => {
                    let from = to - i64::from(of);
                    let minutes = self
                        .store
                        .run(move |s| latency::minutes(s, from, to))
                        .await?;
                    latency::evaluate(config, &minutes, to)
                }
                None => Vec::new(),
            };
            let still: std::collections::BTreeSet<Labels> = fires
                .iter()
                .filter_map(|u| match u {
                    Update::Fire { alert, .. } => Some(latency::identity(&alert.labels)),
                    Update::Resolve { .. } => None,
                })
                .collect();
            for u in fires {
                self.engine.apply(cfg, u, now);
            }
            for labels in firing.into_iter().filter(|l| !still.contains(l)) {
                self.engine
                    .apply(cfg, Update::Resolve { labels, at_ms: now }, now);
            }
        }
        let firing = self
            .engine
            .alerts
            .values()
            .any(|a| a.firing && a.rule() == "no-data");
        match (self.handle.no_data(config), firing) {
            (true, false) => {
                let n = cfg
                    .no_data
                    .unwrap_or_else(|| unreachable!("no_data() checked it"));
                let silent = (now - self.handle.last_received_ms.load(Ordering::Relaxed)) / 1000;
                let a = rules::alert(
                    "",
                    "no-data",
                    n.severity.unwrap_or(Severity::Critical),
                    vec![],
                    format!("the collector has received nothing from any agent for {silent} s"),
                    "/api/v1/agents".to_owned(),
                    now,
                );
                self.engine.apply(
                    cfg,
                    Update::Fire {
                        alert: a,
                        hold_ms: None,
                    },
                    now,
                );
            }
            (false, true) => {
                let labels = Labels::from([
                    ("tenant".to_owned(), String::new()),
                    ("rule".to_owned(), "no-data".to_owned()),
                ]);
                self.engine
                    .apply(cfg, Update::Resolve { labels, at_ms: now }, now);
            }
            _ => {}
        }
        Ok(())
    }

    /// How long to sleep before the next step.
    fn sleep_for(&self, config: &Config) -> Duration {
        let now = self.handle.clock.now_ms();
        let poll = i64::try_from(config.alerting.poll.as_millis()).unwrap_or(1000);
        let next = self
            .engine
            .next_due(&config.alerting)
            .map_or(now + poll, |t| t.min(now + poll));
        Duration::from_millis(u64::try_from(next - now).unwrap_or(0))
    }
}

/// The alert engine as a follower of the event log (`log/consumer.rs`):
/// woken when events are written, when its own timers are due (group
/// flushes, the latency minute, no data; at most `alerting.poll` apart),
/// and by the handle's kick (silences, reloads).
pub struct Follower {
    r: Runner,
    settings: watch::Receiver<Arc<Config>>,
    applied: Arc<Config>,
    /// The cursor of the last commit.
    committed: i64,
    /// When its timers are next due (set after each step).
    next: tokio::time::Instant,
}

impl Follower {
    /// Loads the engine's state from the store. A restart: held-back
    /// groups' stored next flush came from the schedule of then, so they
    /// are woken to follow the one in force.
    pub async fn load(
        store: Store,
        mut settings: watch::Receiver<Arc<Config>>,
        handle: Handle,
    ) -> Result<Self, StoreError> {
        let (mut engine, cursor) = Runner::load(&store, &handle).await?;
        engine.wake_deferred(handle.clock.now_ms());
        let applied = settings.borrow_and_update().clone();
        Ok(Self {
            r: Runner {
                store,
                handle,
                engine,
                cursor,
                latency_unit: 0,
                silences: Vec::new(),
                known_silences: Vec::new(),
                silences_read: None,
                pruned_ms: 0,
            },
            settings,
            applied,
            committed: cursor,
            next: tokio::time::Instant::now(),
        })
    }

    /// The config in force; a reload wakes held-back groups so they follow
    /// the new schedules at once.
    fn config(&mut self) -> Arc<Config> {
        let config = self.settings.borrow_and_update().clone();
        if !Arc::ptr_eq(&config, &self.applied) {
            self.r.engine.wake_deferred(self.r.handle.clock.now_ms());
            self.applied = config.clone();
        }
        config
    }

    async fn settle(&mut self, config: &Config, now: i64) -> Result<(), StoreError> {
        let moved = self.r.cursor != self.committed;
        let result = self.r.settle(config, now, moved).await;
        self.next = tokio::time::Instant::now() + self.r.sleep_for(config);
        match result {
            Ok(()) => {
                self.committed = self.r.cursor;
                Ok(())
            }
            Err(e) => {
                // What this step changed was not committed: start again
                // from the store (the events are read again).
                if let Ok((engine, cursor)) = Runner::load(&self.r.store, &self.r.handle).await {
                    self.r.engine = engine;
                    self.r.cursor = cursor;
                    self.committed = cursor;
                }
                Err(e)
            }
        }
    }
}

impl crate::log::consumer::Consumer for Follower {
    type Item = crate::store::EventRow;

    async fn apply(&mut self, events: Vec<Arc<crate::store::EventRow>>) -> Result<(), StoreError> {
        let config = self.config();
        let now = self.r.handle.clock.now_ms();
        self.r.take_events(&config, &events, now);
        self.settle(&config, now).await
    }

    fn wake(&self) -> Option<Arc<Notify>> {
        Some(self.r.handle.kick.clone())
    }

    fn position(&self) -> i64 {
        self.r.cursor
    }

    fn durable(&self) -> i64 {
        self.committed
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        Some(self.next)
    }

    async fn tick(&mut self) -> Result<(), StoreError> {
        let config = self.config();
        let now = self.r.handle.clock.now_ms();
        self.settle(&config, now).await
    }

    async fn finish(&mut self) {}
}

/// Cursor name under which the alert engine is registered with the
/// consumer driver.
pub const FOLLOWER: &str = "alerting";

/// Runs the alert engine until shutdown, on the one consumer driver.
pub async fn run(
    store: Store,
    settings: watch::Receiver<Arc<Config>>,
    handle: Handle,
    shutdown: CancellationToken,
) {
    let cursor = crate::log::consumer::Registry::default().register(FOLLOWER);
    let source = crate::store::EventLog(store.clone());
    let make = move || Follower::load(store.clone(), settings.clone(), handle.clone());
    crate::log::consumer::drive(FOLLOWER, source, cursor, make, shutdown).await;
}
