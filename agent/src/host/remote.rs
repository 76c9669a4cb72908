//! Remote port checks: what an outsider would find open, checked from this
//! agent with plain TCP connects (what operators used `nmap -sT` for) —
//! for example another host's public name, or this host's own overlay
//! address seen from a peer.
//!
//! A check is `HOST:PORTS` with PORTS a list of ports and ranges
//! (`22,80,8000-8100`; `[ADDR]:PORTS` for IPv6). Connects start at most
//! `rate` per second (spread evenly, so neither the far side nor a
//! firewall on the way sees a burst) and each gets `timeout`. A pass
//! reports the set of open ports and how many were refused, timed out or
//! failed otherwise; the collector compares sets and records changes. A
//! pass never overlaps the next: a long one delays it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use sonde_proto::v1::{RemoteCheckResult, TcpStatus};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::probe::resolve::Resolve;
use crate::probe::tcp::{Connector, classify};

/// `[[remote-check]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RemoteCheck {
    /// `HOST:PORTS` entries.
    pub targets: Vec<String>,
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Per connect.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Connects started per second at most.
    #[serde(default = "default_rate")]
    pub rate: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_rate() -> u32 {
    100
}

/// Largest rate accepted.
pub const MAX_RATE: u32 = 10_000;

impl RemoteCheck {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_RATE).contains(&self.rate) {
            return Err(format!("rate must be between 1 and {MAX_RATE}"));
        }
        if self.interval < Duration::from_secs(1) {
            return Err("interval must be at least 1s".into());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err("timeout must be between 1ms and 60s".into());
        }
        for t in &self.targets {
            Target::parse(t)?;
        }
        Ok(())
    }
}

/// One parsed `HOST:PORTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub label: String,
    pub host: String,
    pub ports: Vec<u16>,
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{text:?}: {why}");
        let (host, spec) = sonde_runtime::target::split_host(text)
            .ok_or_else(|| bad("not HOST:PORTS ([ADDR]:PORTS for IPv6)"))?;
        let mut ports = BTreeSet::new();
        for part in spec.split(',') {
            let port = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(&format!("{p:?} is not a port (1-65535)")))
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(bad(&format!("range {part:?} runs backwards")));
                    }
                    ports.extend(a..=b);
                }
                None => {
                    ports.insert(port(part)?);
                }
            }
        }
        Ok(Self {
            label: text.to_owned(),
            host: host.to_owned(),
            ports: ports.into_iter().collect(),
        })
    }
}

/// Connects to every port of `addr`, at most `rate` starts per second.
pub async fn check<C: Connector + Clone>(
    net: &C,
    addr: IpAddr,
    ports: &[u16],
    timeout: Duration,
    rate: u32,
) -> RemoteCheckResult {
    let mut r = RemoteCheckResult {
        started_unix_nanos: net.now_unix_nanos(),
        address: addr.to_string(),
        checked: u32::try_from(ports.len()).unwrap_or(u32::MAX),
        ..RemoteCheckResult::default()
    };
    let started = Instant::now();
    let spacing = Duration::from_secs(1) / rate.max(1);
    let mut running = JoinSet::new();
    let mut open = BTreeSet::new();
    let mut settle = |r: &mut RemoteCheckResult,
                      port: u16,
                      outcome: Option<std::io::Result<()>>| {
        match outcome {
            Some(Ok(())) => {
                open.insert(u32::from(port));
            }
            None => r.timed_out += 1,
            Some(Err(e)) => {
                match classify(&e) {
                    TcpStatus::Refused => r.refused += 1,
                    TcpStatus::Timeout => r.timed_out += 1,
                    _ => r.failed += 1,
                }
                if r.error.is_empty() && classify(&e) != TcpStatus::Refused {
                    r.error = format!("port {port}: {e}");
                }
            }
        }
    };
    for (i, &port) in ports.iter().enumerate() {
        tokio::time::sleep_until(started + spacing * u32::try_from(i).unwrap_or(u32::MAX)).await;
        while let Some(done) = running.try_join_next() {
            if let Ok((port, outcome)) = done {
                settle(&mut r, port, outcome);
            }
        }
        let net = net.clone();
        running.spawn(async move {
            let target = SocketAddr::new(addr, port);
            (
                port,
                tokio::time::timeout(timeout, net.connect(target))
                    .await
                    .ok(),
            )
        });
    }
    while let Some(done) = running.join_next().await {
        if let Ok((port, outcome)) = done {
            settle(&mut r, port, outcome);
        }
    }
    r.open = open.into_iter().collect();
    r.duration_nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    r
}

/// Resolves `target`'s host (its first address, through the agent's
/// resolver and its timeout) and checks it.
pub async fn run_once<C: Connector + Clone, R: Resolve>(
    net: &C,
    resolver: &R,
    target: &Target,
    timeout: Duration,
    rate: u32,
) -> RemoteCheckResult {
    let addr = match target.host.parse::<IpAddr>() {
        Ok(a) => Ok(a),
        Err(_) => match resolver.lookup(&target.host).await {
            Ok(addrs) => addrs
                .first()
                .copied()
                .ok_or_else(|| format!("{}: no address", target.host)),
            Err(e) => Err(format!("{}: {e}", target.host)),
        },
    };
    let mut r = match addr {
        Ok(a) => check(net, a, &target.ports, timeout, rate).await,
        Err(error) => RemoteCheckResult {
            started_unix_nanos: net.now_unix_nanos(),
            error,
            ..RemoteCheckResult::default()
        },
    };
    r.target.clone_from(&target.label);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[test]
    fn parses_targets() {
        let t = Target::parse("host.example.net:22,80,8000-8002").unwrap();
        assert_eq!(t.host, "host.example.net");
        assert_eq!(t.ports, [22, 80, 8000, 8001, 8002]);
        let t = Target::parse("[2001:db8::1]:443,22").unwrap();
        assert_eq!(
            (t.host.as_str(), t.ports.as_slice()),
            ("2001:db8::1", &[22, 443][..])
        );
        for (bad, why) in [
            ("host", "not HOST:PORTS"),
            ("2001:db8::1:22", "[ADDR]:PORTS"),
            ("h:0", "not a port"),
            ("h:70000", "not a port"),
            ("h:9-3", "backwards"),
            (":22", "not HOST:PORTS"),
            ("[::1:22", "not HOST:PORTS"),
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// Port 22 open, 23 refused, 24 silent, 25 unreachable; records when
    /// each connect started.
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Vec<(u16, Instant)>>>);

    impl Connector for Fake {
        async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
            self.0.lock().unwrap().push((addr.port(), Instant::now()));
            match addr.port() {
                22 => Ok(()),
                23 => Err(io::ErrorKind::ConnectionRefused.into()),
                25 => Err(io::Error::new(
                    io::ErrorKind::HostUnreachable,
                    "no route to host",
                )),
                _ => std::future::pending().await,
            }
        }
        fn now_unix_nanos(&self) -> i64 {
            5
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reports_the_open_set_at_the_configured_rate() {
        let fake = Fake::default();
        let start = Instant::now();
        let r = check(
            &fake,
            "192.0.2.1".parse().unwrap(),
            &[22, 23, 24, 25],
            Duration::from_secs(2),
            2,
        )
        .await;
        assert_eq!(r.open, [22]);
        assert_eq!((r.checked, r.refused, r.timed_out, r.failed), (4, 1, 1, 1));
        assert_eq!(r.error, "port 25: no route to host");
        let starts: Vec<Duration> = fake
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| *t - start)
            .collect();
        assert_eq!(
            starts,
            [0, 500, 1000, 1500].map(Duration::from_millis),
            "two connects per second, evenly spread"
        );
        // The silent port's connect started at 1 s and timed out 2 s later.
        assert_eq!(r.duration_nanos, 3_000_000_000);
    }
}
