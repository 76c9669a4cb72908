//! Host-name targets: resolved when they first appear and again on a
//! schedule (`[resolve] refresh`). A failed resolution is a result of its
//! own (status `resolve-error` for ping and TCP, an error for traceroute);
//! the last good addresses stay in use until a resolution succeeds again,
//! and a name that fails is retried sooner ([`RETRY`]).
//!
//! Each name is probed at its first address of each family, in the order
//! the system resolver returns them (RFC 6724), so a round-robin name does
//! not churn the target set at every refresh.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// How long one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delay of a name whose last resolution failed (at most the refresh).
pub const RETRY: Duration = Duration::from_secs(30);

/// Name resolution.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0)))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {LOOKUP_TIMEOUT:?}"),
                )
            })??;
        Ok(found.map(|a| a.ip()).collect())
    }
}

/// The first address of each family, in resolver order.
pub fn pick(found: &[IpAddr]) -> Vec<IpAddr> {
    let v4 = found.iter().find(|a| a.is_ipv4());
    let v6 = found.iter().find(|a| a.is_ipv6());
    v4.into_iter().chain(v6).copied().collect()
}

#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<IpAddr>,
    next: Instant,
}

/// The resolved names and when each is due again.
#[derive(Debug, Default)]
pub struct Names {
    entries: BTreeMap<String, Entry>,
}

/// What one refresh found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Some name's addresses changed (the plan must be rebuilt).
    pub changed: bool,
    /// Names that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Names that resolved.
    pub resolved: Vec<String>,
}

impl Names {
    /// The addresses in use for `host` (empty if it never resolved).
    pub fn get(&self, host: &str) -> &[IpAddr] {
        self.entries.get(host).map_or(&[], |e| &e.addrs)
    }

    /// The earliest time a name is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.next).min()
    }

    /// Keeps exactly `wanted` (new names are due at once).
    pub fn track(&mut self, wanted: &BTreeSet<String>, now: Instant) {
        self.entries.retain(|name, _| wanted.contains(name));
        for name in wanted {
            self.entries.entry(name.clone()).or_insert(Entry {
                addrs: Vec::new(),
                next: now,
            });
        }
    }

    /// Resolves every name due at `now` (concurrently).
    pub async fn refresh<R: Resolve>(
        &mut self,
        resolver: &R,
        every: Duration,
        now: Instant,
    ) -> Refreshed {
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next <= now)
            .map(|(n, _)| n.clone())
            .collect();
        let lookups = due.iter().map(|name| resolver.lookup(name));
        let results = futures_util::future::join_all(lookups).await;
        let mut out = Refreshed::default();
        for (name, result) in due.into_iter().zip(results) {
            let entry = self.entries.get_mut(&name).expect("tracked");
            match result.map(|found| pick(&found)) {
                Ok(addrs) if !addrs.is_empty() => {
                    if addrs != entry.addrs {
                        tracing::info!(host = %name, addresses = ?addrs, "host name resolved");
                        out.changed = true;
                        entry.addrs = addrs;
                    }
                    entry.next = now + every;
                    out.resolved.push(name);
                }
                outcome => {
                    let error = match outcome {
                        Err(e) => e.to_string(),
                        Ok(_) => "no addresses".to_owned(),
                    };
                    tracing::warn!(host = %name, error = %error, "host name did not resolve");
                    out.failed.push((name, error));
                    entry.next = now + every.min(RETRY);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    struct Fake(Mutex<HashMap<String, io::Result<Vec<IpAddr>>>>);
    impl Resolve for Fake {
        async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            match self.0.lock().unwrap().get(host) {
                Some(Ok(a)) => Ok(a.clone()),
                Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                None => Err(io::Error::other("unknown name")),
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_on_schedule_keeps_last_good_and_retries_failures_sooner() {
        let fake = Fake(Mutex::new(HashMap::from([(
            "a.test".to_owned(),
            Ok(vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1")]),
        )])));
        let mut names = Names::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(300);
        names.track(&BTreeSet::from(["a.test".into(), "b.test".into()]), t0);
        let r = names.refresh(&fake, every, t0).await;
        assert!(r.changed);
        assert_eq!(r.failed, [("b.test".into(), "unknown name".into())]);
        assert_eq!(names.get("a.test"), [ip("10.0.0.1"), ip("fd00::1")]);
        assert!(names.get("b.test").is_empty());
        // b retries after 30 s, a after 5 min.
        assert_eq!(names.next_due(), Some(t0 + RETRY));
        let r = names.refresh(&fake, every, t0 + RETRY).await;
        assert_eq!((r.changed, r.failed.len()), (false, 1));
        // a fails at its refresh: the old addresses stay.
        fake.0.lock().unwrap().insert(
            "a.test".into(),
            Err(io::Error::other("temporary failure in name resolution")),
        );
        let r = names.refresh(&fake, every, t0 + every).await;
        assert!(
            r.failed
                .iter()
                .any(|(n, e)| n == "a.test" && e.contains("temporary"))
        );
        assert_eq!(names.get("a.test"), [ip("10.0.0.1"), ip("fd00::1")]);
        // Recovers with a new address: changed.
        fake.0
            .lock()
            .unwrap()
            .insert("a.test".into(), Ok(vec![ip("10.0.0.3")]));
        let r = names.refresh(&fake, every, t0 + every + RETRY).await;
        assert!(r.changed && r.failed.iter().all(|(n, _)| n != "a.test"));
        assert_eq!(names.get("a.test"), [ip("10.0.0.3")]);
        // Untracked names are forgotten.
        names.track(&BTreeSet::from(["b.test".into()]), t0);
        assert!(names.get("a.test").is_empty());
    }
}
