//! What one probe result means to the collector, independent of its wire
//! shape: which series it belongs to, when it was sent, and whether it
//! answered. The exporter and the analysis read records only through
//! [`observe`], so both agree on series identity.
//!
//! A series is (agent, probe kind, target). The target is the configured
//! target string (an address, `HOST` or `HOST:PORT`), except for targets
//! that came from a CIDR range, where it is the address probed (with the
//! port for TCP): every host of a range is its own series.

use std::net::IpAddr;

use ipnet::IpNet;
use sonde_proto::v1::{PingStatus, TcpStatus, TraceResult, record};

/// The probe kinds the collector analyses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    Ping,
    Tcp,
    Trace,
}

impl Probe {
    pub fn as_str(self) -> &'static str {
        match self {
            Probe::Ping => "ping",
            Probe::Tcp => "tcp",
            Probe::Trace => "trace",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ping" => Probe::Ping,
            "tcp" => Probe::Tcp,
            "trace" => Probe::Trace,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe result, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    pub probe: Probe,
    /// The series' target (see the module docs).
    pub target: String,
    /// The address probed, when there was one.
    pub address: Option<IpAddr>,
    /// When the probe was sent (agent clock), ns since the Unix epoch.
    pub time_ns: i64,
    /// Round-trip (ping), connect (TCP) or last-hop (trace) time when the
    /// probe succeeded; `None` means lost or failed.
    pub rtt_ms: Option<f64>,
    /// Outcome in kebab-case: `ok`, `timeout`, `refused`, …
    pub status: &'static str,
    /// The agent's error text for failures ("" otherwise).
    pub error: &'a str,
    /// The TCP port, for TCP probes.
    pub port: Option<u16>,
    /// The whole trace, for traceroutes.
    pub trace: Option<&'a TraceResult>,
    /// Reply TTL / hop limit of a ping answer (0 unknown).
    pub reply_ttl: u32,
}

impl Observation<'_> {
    /// Whether the probe was answered.
    pub fn ok(&self) -> bool {
        self.rtt_ms.is_some()
    }
}

/// Every status [`observe`] gives, for reading one back from the store.
const STATUSES: [&str; 11] = [
    "ok",
    "timeout",
    "send-error",
    "resolve-error",
    "unreachable",
    "refused",
    "reset",
    "other",
    "error",
    "unreached",
    "unknown",
];

/// The status named `s` (a stored one), `unknown` when not one of ours.
pub fn status_named(s: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or("unknown")
}

/// The /24 (IPv4) or /64 (IPv6) an address belongs to: the unit of the
/// grid views and of prefix outages.
pub fn prefix_of(addr: IpAddr) -> IpNet {
    let len = if addr.is_ipv4() { 24 } else { 64 };
    IpNet::new(addr, len).map_or_else(|_| IpNet::from(addr), |n| n.trunc())
}

/// Nanoseconds as (finite) milliseconds.
#[allow(clippy::cast_precision_loss)]
fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn parse_addr(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// The series target of a result: the configured target, or for a target
/// from a CIDR range the address probed (with `port` for TCP).
fn series_target(configured: &str, address: Option<IpAddr>, port: Option<u16>) -> String {
    match (configured.contains('/'), address) {
        (true, Some(addr)) => match (port, addr) {
            (Some(p), IpAddr::V6(a)) => format!("[{a}]:{p}"),
            (Some(p), a) => format!("{a}:{p}"),
            (None, a) => a.to_string(),
        },
        _ => configured.to_owned(),
    }
}

/// The observation in a record; `None` for records that are not probe
/// results (gaps, scheduler lag, kinds this version does not know).
pub fn observe(kind: &record::Kind) -> Option<Observation<'_>> {
    match kind {
        record::Kind::Ping(p) => {
            let status = PingStatus::try_from(p.status).unwrap_or(PingStatus::Unspecified);
            let address = parse_addr(&p.address);
            Some(Observation {
                probe: Probe::Ping,
                target: series_target(&p.target, address, None),
                address,
                time_ns: p.sent_unix_nanos,
                rtt_ms: (status == PingStatus::Ok).then(|| ms(p.rtt_nanos)),
                status: match status {
                    PingStatus::Ok => "ok",
                    PingStatus::Timeout => "timeout",
                    PingStatus::SendError => "send-error",
                    PingStatus::ResolveError => "resolve-error",
                    PingStatus::Unreachable => "unreachable",
                    PingStatus::Unspecified => "unknown",
                },
                error: &p.error,
                port: None,
                trace: None,
                reply_ttl: p.reply_ttl,
            })
        }
        record::Kind::Tcp(t) => {
            let status = TcpStatus::try_from(t.status).unwrap_or(TcpStatus::Unspecified);
            let address = parse_addr(&t.address);
            let port = u16::try_from(t.port).ok();
            Some(Observation {
                probe: Probe::Tcp,
                target: series_target(&t.target, address, port),
                address,
                time_ns: t.sent_unix_nanos,
                rtt_ms: (status == TcpStatus::Ok).then(|| ms(t.connect_nanos)),
                status: match status {
                    TcpStatus::Ok => "ok",
                    TcpStatus::Refused => "refused",
                    TcpStatus::Timeout => "timeout",
                    TcpStatus::Unreachable => "unreachable",
                    TcpStatus::Reset => "reset",
                    TcpStatus::Other => "other",
                    TcpStatus::ResolveError => "resolve-error",
                    TcpStatus::Unspecified => "unknown",
                },
                error: &t.error,
                port,
                trace: None,
                reply_ttl: 0,
            })
        }
        record::Kind::Trace(t) => {
            let address = parse_addr(&t.address);
            // A trace "answers" when the destination did; its time is the
            // best RTT of the last hop.
            let last = t
                .hops
                .iter()
                .rev()
                .find(|h| !h.address.is_empty() && !h.rtt_nanos.is_empty());
            let rtt_ms = if t.reached {
                last.and_then(|h| h.rtt_nanos.iter().min()).map(|n| ms(*n))
            } else {
                None
            };
            Some(Observation {
                probe: Probe::Trace,
                target: series_target(&t.target, address, None),
                address,
                time_ns: t.started_unix_nanos,
                rtt_ms,
                status: if !t.error.is_empty() {
                    "error"
                } else if t.reached {
                    "ok"
                } else {
                    "unreached"
                },
                error: &t.error,
                port: None,
                trace: Some(t),
                reply_ttl: 0,
            })
        }
        // Not probe results: host facts are the `facts` consumer's.
        record::Kind::Gap(_)
        | record::Kind::Lag(_)
        | record::Kind::PublicIp(_)
        | record::Kind::Ports(_)
        | record::Kind::RemoteCheck(_)
        | record::Kind::Metrics(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_proto::v1::{PingResult, TcpResult};

    #[test]
    fn series_identity_and_outcome() {
        let ping = record::Kind::Ping(PingResult {
            target: "10.1.2.0/24".into(),
            address: "10.1.2.7".into(),
            sent_unix_nanos: 5,
            rtt_nanos: 1_500_000,
            status: PingStatus::Ok.into(),
            ..PingResult::default()
        });
        let o = observe(&ping).unwrap();
        assert_eq!(
            (o.target.as_str(), o.rtt_ms, o.status),
            ("10.1.2.7", Some(1.5), "ok")
        );
        assert_eq!(prefix_of(o.address.unwrap()).to_string(), "10.1.2.0/24");

        let tcp = record::Kind::Tcp(TcpResult {
            target: "2001:db8::/120:443".into(),
            address: "2001:db8::9".into(),
            port: 443,
            status: TcpStatus::Refused.into(),
            connect_nanos: 0,
            ..TcpResult::default()
        });
        let o = observe(&tcp).unwrap();
        assert_eq!(
            (o.target.as_str(), o.rtt_ms, o.status),
            ("[2001:db8::9]:443", None, "refused")
        );
        assert_eq!(prefix_of(o.address.unwrap()).to_string(), "2001:db8::/64");

        let host = record::Kind::Ping(PingResult {
            target: "www.example.net".into(),
            status: PingStatus::ResolveError.into(),
            ..PingResult::default()
        });
        let o = observe(&host).unwrap();
        assert_eq!(
            (o.target.as_str(), o.address, o.ok()),
            ("www.example.net", None, false)
        );
        // Every status observe gives reads back from the store as itself.
        assert_eq!(status_named(o.status), "resolve-error");
        assert_eq!(status_named("bogus"), "unknown");
    }
}
