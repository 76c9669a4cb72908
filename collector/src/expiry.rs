//! Certificates about to expire, seen before they stop anything: the
//! collector's own certificate and CA (checked at start, on reload and
//! hourly) and every client certificate that connects (reported by the
//! listener). Within `[tls] expiry-warning` (14 days by default) each one
//! raises a `certificate-expiring` event — once a day per certificate —
//! and shows in the metrics.
//!
//! Events about the collector's own certificates have no tenant (operators
//! see them); a client certificate's event belongs to its tenant (and its
//! agent, for an agent certificate).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sonde_proto::{Identity, Role};
use sonde_runtime::tls::{self, Validity};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::store::{self, AgentKey, EventKind, Store};

/// How often the collector's own certificates are looked at.
const OWN_CHECK: Duration = Duration::from_secs(3600);
/// A certificate is warned about at most this often.
const REPEAT: i64 = 86_400;
/// Client certificates reported by the listener and not yet looked at;
/// beyond this, reports are dropped (the next connection reports again).
const QUEUE: usize = 256;

/// For `/metrics`: seconds left (negative once expired).
#[derive(Debug, Default)]
pub struct Stats {
    pub server_seconds_left: AtomicI64,
    pub ca_seconds_left: AtomicI64,
    /// Distinct client certificates seen within the warning window and
    /// not yet expired.
    pub clients_expiring: AtomicU64,
}

/// Which certificate a report is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Server,
    Ca,
    Client(Identity),
}

/// A client certificate the listener accepted that expires soon.
#[derive(Debug)]
pub struct Seen {
    pub identity: Identity,
    pub validity: Validity,
}

/// The listener's end: reports client certificates that expire within the
/// warning window.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Seen>,
}

impl Reporter {
    /// Reports `chain`'s end entity if it expires within `warning` of `now`
    /// (Unix seconds). Never waits: a full queue drops the report.
    pub fn connected(
        &self,
        identity: &Identity,
        validity: Option<Validity>,
        warning: Duration,
        now: i64,
    ) {
        if let Some(validity) = validity
            && validity.not_after - now <= i64::try_from(warning.as_secs()).unwrap_or(i64::MAX)
        {
            let _ = self.tx.try_send(Seen {
                identity: identity.clone(),
                validity,
            });
        }
    }
}

/// What has been warned about: (subject, not-after) → last warning time.
#[derive(Debug, Default)]
struct Warned(HashMap<(Subject, i64), i64>);

impl Warned {
    /// Whether to warn now about `subject` (not warned within a day).
    fn due(&mut self, subject: &Subject, not_after: i64, now: i64) -> bool {
        let last = self
            .0
            .entry((subject.clone(), not_after))
            .or_insert(i64::MIN);
        if now.saturating_sub(*last) < REPEAT {
            return false;
        }
        *last = now;
        true
    }

    /// Forgets certificates that have expired; counts the clients left.
    fn clients_expiring(&mut self, now: i64) -> u64 {
        self.0.retain(|(_, not_after), _| *not_after >= now);
        self.0
            .keys()
            .filter(|(s, _)| matches!(s, Subject::Client(_)))
            .count() as u64
    }
}

/// Starts the watcher; returns the listener's reporter.
pub fn spawn(
    store: Store,
    settings: watch::Receiver<Arc<Config>>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> (Reporter, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(store, settings, stats, rx, shutdown));
    (Reporter { tx }, task)
}

async fn run(
    store: Store,
    mut settings: watch::Receiver<Arc<Config>>,
    stats: Arc<Stats>,
    mut seen: mpsc::Receiver<Seen>,
    shutdown: CancellationToken,
) {
    let mut warned = Warned::default();
    let mut hourly = tokio::time::interval(OWN_CHECK);
    loop {
        let mut found = Vec::new();
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = hourly.tick() => found = own(&settings.borrow_and_update(), &stats),
            Ok(()) = settings.changed() => found = own(&settings.borrow_and_update(), &stats),
            Some(s) = seen.recv() => found.push((Subject::Client(s.identity), s.validity)),
        }
        let now = sonde_runtime::clock::unix_millis() / 1000;
        let warning = settings.borrow().tls.expiry_warning;
        for (subject, validity) in found {
            let left = validity.not_after - now;
            if left > i64::try_from(warning.as_secs()).unwrap_or(i64::MAX)
                || !warned.due(&subject, validity.not_after, now)
            {
                continue;
            }
            record(&store, &subject, &validity, left).await;
        }
        stats
            .clients_expiring
            .store(warned.clients_expiring(now), Relaxed);
    }
}

/// The collector's own certificate and its CA certificates, with the
/// gauges updated.
fn own(config: &Config, stats: &Stats) -> Vec<(Subject, Validity)> {
    let now = sonde_runtime::clock::unix_millis() / 1000;
    let mut found = Vec::new();
    for (path, subject, gauge) in [
        (
            &config.tls.cert,
            Subject::Server,
            &stats.server_seconds_left,
        ),
        (&config.tls.ca, Subject::Ca, &stats.ca_seconds_left),
    ] {
        let certs = match tls::load_certs(path) {
            Ok(certs) => certs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read certificate to check its expiry");
                continue;
            }
        };
        // Clients check the server chain's leaf; of the CA file, the
        // certificate that ends first.
        let validity = if subject == Subject::Server {
            certs.first().and_then(tls::validity)
        } else {
            certs
                .iter()
                .filter_map(tls::validity)
                .min_by_key(|v| v.not_after)
        };
        if let Some(v) = validity {
            gauge.store(v.not_after - now, Relaxed);
            found.push((subject, v));
        }
    }
    found
}

/// The event key of what only operators see.
fn operators() -> AgentKey {
    AgentKey {
        tenant: String::new(),
        name: String::new(),
    }
}

async fn record(store: &Store, subject: &Subject, v: &Validity, left: i64) {
    let (key, which, identity) = match subject {
        Subject::Server => (operators(), "server", None),
        Subject::Ca => (operators(), "ca", None),
        Subject::Client(id) => (
            AgentKey {
                tenant: id.tenant.clone(),
                name: if id.role == Role::Agent {
                    id.name.clone()
                } else {
                    String::new()
                },
            },
            "client",
            Some(id.to_uri()),
        ),
    };
    #[allow(clippy::cast_precision_loss)]
    let days_left = (left as f64 / 86_400.0 * 10.0).round() / 10.0;
    let detail = serde_json::json!({
        "certificate": which,
        "identity": identity,
        "subject": v.subject,
        "not_after": sonde_runtime::clock::rfc3339_seconds(v.not_after),
        "days_left": days_left,
    });
    tracing::warn!(message_id = sonde_runtime::logging::ids::CERT_EXPIRING, certificate = which, identity = ?identity, subject = %v.subject, not_after = %sonde_runtime::clock::rfc3339_seconds(v.not_after), days_left, "certificate expires soon");
    let now = sonde_runtime::clock::unix_millis();
    let recorded = store
        .run(move |s| {
            s.with(|c| {
                store::insert_event(c, now, &key, EventKind::CertificateExpiring, &detail, None)
            })
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "cannot record certificate-expiring event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_a_day_and_forgets_expired() {
        let mut w = Warned::default();
        let id = Identity::new("acme", Role::Agent, "a1").unwrap();
        let c = Subject::Client(id);
        assert!(w.due(&c, 1_000_000, 0));
        assert!(!w.due(&c, 1_000_000, 3600), "again within a day");
        assert!(w.due(&c, 1_000_000, 86_400), "again after a day");
        // A renewed certificate (new not-after) is its own entry.
        assert!(w.due(&c, 2_000_000, 86_401));
        assert!(w.due(&Subject::Server, 1_000_000, 0));
        assert_eq!(w.clients_expiring(100), 2);
        assert_eq!(w.clients_expiring(1_500_000), 1, "the first expired");
    }
}
