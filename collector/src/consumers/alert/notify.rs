//! Delivery: one worker per receiver integration takes that
//! integration's pending notifications from the outbox oldest first (so a
//! resolution never overtakes its firing message), sends each, and marks
//! it sent; a failure is retried after the far side's `Retry-After` or a
//! capped, jittered backoff, until `give-up-after`. After
//! `failing-after` failures in a row the integration is *failing*: a
//! `receiver-failing` event is recorded and the metric counts it, until a
//! delivery succeeds (`receiver-recovered`).
//!
//! Workers are rebuilt when the config changes; the outbox is in the
//! store, so nothing waiting is lost by that or by a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::config::Delivery;
use super::receiver::{self, Integration, SendError};
use super::state;
use crate::config::Config;
use crate::consumers::analysis::Clock;
use crate::store::{self, AgentKey, EventKind, Store};

/// Delivery counters for `/metrics` (no tenant data: receiver names are
/// configuration).
#[derive(Debug, Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub given_up: AtomicU64,
    /// Integrations failing now.
    pub failing: AtomicU64,
    /// Alerts firing now (set by the engine).
    pub firing: AtomicU64,
    pub deadman_pings: AtomicU64,
    pub deadman_failures: AtomicU64,
}

/// Longest idle wait between outbox checks (a lost wake-up costs this).
const IDLE: Duration = Duration::from_secs(5);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the workers of the configured receivers until shutdown.
pub async fn run(
    store: Store,
    mut settings: watch::Receiver<Arc<Config>>,
    clock: Clock,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    loop {
        let config = settings.borrow_and_update().clone();
        let generation = shutdown.child_token();
        let mut tasks = tokio::task::JoinSet::new();
        let delivery = config.alerting.delivery;
        for r in &config.alerting.receiver {
            for name in receiver::names(r) {
                match receiver::build(r, &name, delivery.timeout) {
                    Ok(integration) => {
                        tasks.spawn(worker(Worker {
                            store: store.clone(),
                            receiver: r.name.clone(),
                            name,
                            integration,
                            delivery,
                            clock,
                            wake: wake.clone(),
                            stats: stats.clone(),
                            stop: generation.clone(),
                        }));
                    }
                    Err((key, e)) => {
                        tracing::error!(receiver = %r.name, integration = %name, key = %key, error = %e,
                            "cannot build receiver integration; its notifications wait");
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                generation.cancel();
                while tasks.join_next().await.is_some() {}
                return;
            }
            changed = settings.changed() => {
                generation.cancel();
                while tasks.join_next().await.is_some() {}
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

struct Worker {
    store: Store,
    receiver: String,
    name: String,
    integration: Box<dyn Integration>,
    delivery: Delivery,
    clock: Clock,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

impl Worker {
    /// Waits `d`, or less when woken; false when stopping.
    async fn wait(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(d) => true,
            () = self.wake.notified() => true,
        }
    }

    async fn event(&self, tenant: Option<&str>, kind: EventKind, detail: serde_json::Value) {
        let key = AgentKey {
            tenant: tenant.unwrap_or_default().to_owned(),
            name: String::new(),
        };
        let now = self.clock.now_ms();
        let recorded = self
            .store
            .run(move |s| s.with(|c| store::insert_event(c, now, &key, kind, &detail, None)))
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "cannot record receiver event");
        }
    }
}

/// A worker's run of failures.
struct Failures {
    backoff: sonde_runtime::backoff::Backoff,
    count: u32,
    failing: bool,
}

impl Worker {
    /// Records the outcome of one attempt at notification `n`.
    async fn outcome(&self, f: &mut Failures, n: &state::Outgoing, result: Result<(), SendError>) {
        let now = self.clock.now_ms();
        let id = n.id;
        let Err(error) = result else {
            f.backoff.reset();
            f.count = 0;
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.store.run(move |s| state::sent(s, id, now)).await {
                tracing::error!(error = %e, id, "delivered, but cannot mark the notification sent");
            }
            tracing::info!(receiver = %self.receiver, integration = %self.name, id, "notification delivered");
            if f.failing {
                f.failing = false;
                self.stats.failing.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(receiver = %self.receiver, integration = %self.name, "receiver recovered");
                let detail = json!({"receiver": self.receiver, "integration": self.name});
                self.event(n.tenant.as_deref(), EventKind::ReceiverRecovered, detail)
                    .await;
            }
            return;
        };
        f.count = f.count.saturating_add(1);
        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        let expired = now.saturating_sub(n.created_ms) >= ms(self.delivery.give_up_after);
        let (give_up, delay) = match &error {
            SendError::Rejected { .. } => (true, Duration::ZERO),
            SendError::Retry { after, .. } => {
                (expired, after.unwrap_or_else(|| f.backoff.next_delay()))
            }
        };
        let reason = error.to_string();
        tracing::warn!(receiver = %self.receiver, integration = %self.name,
            to = %self.integration.describe(), id, attempt = n.attempts + 1, error = %reason,
            retry_in = ?delay, give_up, "notification not delivered");
        let (next, why) = (now.saturating_add(ms(delay)), reason.clone());
        let recorded = self
            .store
            .run(move |s| state::attempt_failed(s, id, &why, next, give_up))
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, id, "cannot record the failed attempt");
        }
        if give_up {
            self.stats.given_up.fetch_add(1, Ordering::Relaxed);
        }
        if !f.failing && (f.count >= self.delivery.failing_after || give_up) {
            f.failing = true;
            self.stats.failing.fetch_add(1, Ordering::Relaxed);
            tracing::error!(receiver = %self.receiver, integration = %self.name,
                failures = f.count, error = %reason, "receiver is failing");
            let detail = json!({
                "receiver": self.receiver,
                "integration": self.name,
                "failures": f.count,
                "error": reason,
                "given_up": give_up,
            });
            self.event(n.tenant.as_deref(), EventKind::ReceiverFailing, detail)
                .await;
        }
    }
}

async fn worker(w: Worker) {
    let mut failures = Failures {
        backoff: sonde_runtime::backoff::Backoff::new(
            w.delivery.retry_initial,
            w.delivery.retry_max,
        ),
        count: 0,
        failing: false,
    };
    loop {
        let (store, receiver, name) = (w.store.clone(), w.receiver.clone(), w.name.clone());
        let next = match store
            .run(move |s| state::next_pending(s, &receiver, &name))
            .await
        {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the notification outbox");
                if !w.wait(IDLE).await {
                    return;
                }
                continue;
            }
        };
        let Some(n) = next else {
            if !w.wait(IDLE).await {
                return;
            }
            continue;
        };
        let now = w.clock.now_ms();
        if n.next_ms > now {
            let d = Duration::from_millis(u64::try_from(n.next_ms - now).unwrap_or(0));
            if !w.wait(d.min(IDLE)).await {
                return;
            }
            continue;
        }
        let attempt = w.integration.send(&n.uid, &n.message);
        let result = tokio::time::timeout(w.delivery.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Retry {
                    reason: format!("no answer within {:?}", w.delivery.timeout),
                    after: None,
                })
            });
        w.outcome(&mut failures, &n, result).await;
    }
}
