//! Probe definitions: the `[[ping]]`, `[[tcp]]` and `[[trace]]` sections of
//! the agent config, and the same shapes the collector assigns to an agent
//! (`sonde.v1.ProbeSet` in a `ConfigUpdate`). Both programs parse, default
//! and validate them here, so a definition the collector accepts is one the
//! agent runs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use sonde_proto::v1;

use crate::target::{Target, TargetError};

/// Shortest ping or TCP interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest traceroute interval.
pub const MIN_TRACE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval of any probe.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest timeout of any probe.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest ICMP payload (fits a 1500-byte MTU over IPv6).
pub const MAX_PAYLOAD: usize = 1452;
/// Default UDP destination port of UDP traceroute.
pub const TRACE_PORT: u16 = 33434;

/// All probe definitions of one source (config file or collector).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Probes {
    #[serde(default)]
    pub ping: Vec<PingProbe>,
    #[serde(default)]
    pub tcp: Vec<TcpProbe>,
    #[serde(default)]
    pub trace: Vec<TraceProbe>,
}

/// ICMP echo to each target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PingProbe {
    pub targets: Vec<Target>,
    /// Time between two echo requests to one address (default 1 s).
    #[serde(with = "humantime_serde", default = "one_second")]
    pub interval: Duration,
    /// Wait for a reply (default: the interval, at most 2 s).
    #[serde(with = "humantime_serde", default)]
    pub timeout: Option<Duration>,
    /// ICMP payload bytes (default 56, as ping(8)).
    #[serde(default = "default_payload")]
    pub payload: usize,
    /// Where host-name targets may be probed: set by the collector for a
    /// tenant's managed targets (its granted prefixes), never in a file.
    #[serde(skip)]
    pub within: Option<Vec<IpNet>>,
}

/// TCP connect to each `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpProbe {
    pub targets: Vec<Endpoint>,
    /// Time between two connects to one endpoint (default 10 s).
    #[serde(with = "humantime_serde", default = "ten_seconds")]
    pub interval: Duration,
    /// Connect timeout (default: the interval, at most 10 s; capped at 60 s).
    #[serde(with = "humantime_serde", default)]
    pub timeout: Option<Duration>,
    /// Where host-name targets may be probed: set by the collector for a
    /// tenant's managed targets (its granted prefixes), never in a file.
    #[serde(skip)]
    pub within: Option<Vec<IpNet>>,
}

/// Traceroute method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TraceMethod {
    #[default]
    Udp,
    Icmp,
}

/// Traceroute to each target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TraceProbe {
    pub targets: Vec<Target>,
    #[serde(default)]
    pub method: TraceMethod,
    /// Time between two traces of one address (default 5 min).
    #[serde(with = "humantime_serde", default = "five_minutes")]
    pub interval: Duration,
    /// Wait for the answers of one round of TTLs (default 2 s).
    #[serde(with = "humantime_serde", default = "two_seconds")]
    pub timeout: Duration,
    /// Highest TTL probed (default 30).
    #[serde(default = "default_max_hops")]
    pub max_hops: u8,
    /// Probes sent per TTL (default 3).
    #[serde(default = "default_probes_per_hop")]
    pub probes_per_hop: u8,
    /// UDP destination port (UDP method; default 33434).
    #[serde(default = "default_trace_port")]
    pub port: u16,
    /// Where host-name targets may be probed: set by the collector for a
    /// tenant's managed targets (its granted prefixes), never in a file.
    #[serde(skip)]
    pub within: Option<Vec<IpNet>>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn two_seconds() -> Duration {
    Duration::from_secs(2)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn default_payload() -> usize {
    56
}
fn default_max_hops() -> u8 {
    30
}
fn default_probes_per_hop() -> u8 {
    3
}
fn default_trace_port() -> u16 {
    TRACE_PORT
}

impl PingProbe {
    /// The timeout in effect.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.interval.min(two_seconds()))
    }
}

impl TcpProbe {
    /// The timeout in effect.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.interval.min(ten_seconds()))
    }
}

/// A `HOST:PORT` endpoint of a TCP probe (`[ADDR]:PORT` or `[RANGE]:PORT`
/// for IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub target: Target,
    pub port: u16,
}

impl FromStr for Endpoint {
    type Err = TargetError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim();
        let invalid = || TargetError::Invalid(format!("{raw} (expected HOST:PORT)"));
        let (host, port) = crate::target::split_host(s).ok_or_else(invalid)?;
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if port == 0 {
            return Err(invalid());
        }
        Ok(Self {
            target: host.parse()?,
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Addr(a) if a.is_ipv6() => write!(f, "[{a}]:{}", self.port),
            Target::Range(n) if n.addr().is_ipv6() => write!(f, "[{n}]:{}", self.port),
            t => write!(f, "{t}:{}", self.port),
        }
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A definition that is out of bounds: `key` is relative to the probe
/// section, e.g. `ping[0].interval`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ProbeError {
    pub key: String,
    pub message: String,
}

fn check(ok: bool, key: impl FnOnce() -> String, message: &str) -> Result<(), ProbeError> {
    if ok {
        Ok(())
    } else {
        Err(ProbeError {
            key: key(),
            message: message.to_owned(),
        })
    }
}

/// The bounds every probe kind shares: some targets, an interval between
/// `min_interval` and 24 h, a timeout between 1 ms and 60 s.
fn check_common(
    key: &dyn Fn(&str) -> String,
    targets: usize,
    interval: Duration,
    min_interval: Duration,
    timeout: Duration,
) -> Result<(), ProbeError> {
    check(targets > 0, || key("targets"), "must not be empty")?;
    let min = humantime::format_duration(min_interval);
    check(
        (min_interval..=MAX_INTERVAL).contains(&interval),
        || key("interval"),
        &format!("must be between {min} and 24h"),
    )?;
    check(
        !timeout.is_zero() && timeout <= MAX_TIMEOUT,
        || key("timeout"),
        "must be between 1ms and 60s",
    )
}

impl Probes {
    /// Checks every bound; the error names the offending key.
    pub fn validate(&self) -> Result<(), ProbeError> {
        for (i, p) in self.ping.iter().enumerate() {
            let key = |k: &str| format!("ping[{i}].{k}");
            check_common(&key, p.targets.len(), p.interval, MIN_INTERVAL, p.timeout())?;
            check(
                p.payload <= MAX_PAYLOAD,
                || key("payload"),
                "must be at most 1452 bytes",
            )?;
        }
        for (i, p) in self.tcp.iter().enumerate() {
            let key = |k: &str| format!("tcp[{i}].{k}");
            check_common(&key, p.targets.len(), p.interval, MIN_INTERVAL, p.timeout())?;
        }
        for (i, p) in self.trace.iter().enumerate() {
            let key = |k: &str| format!("trace[{i}].{k}");
            check_common(
                &key,
                p.targets.len(),
                p.interval,
                MIN_TRACE_INTERVAL,
                p.timeout,
            )?;
            check(
                (1..=64).contains(&p.max_hops),
                || key("max-hops"),
                "must be between 1 and 64",
            )?;
            check(
                (1..=10).contains(&p.probes_per_hop),
                || key("probes-per-hop"),
                "must be between 1 and 10",
            )?;
            check(p.port != 0, || key("port"), "must not be 0")?;
        }
        Ok(())
    }

    /// Whether there is nothing to probe.
    pub fn is_empty(&self) -> bool {
        self.ping.is_empty() && self.tcp.is_empty() && self.trace.is_empty()
    }

    /// Both sets together (the agent's own and the collector's).
    #[must_use]
    pub fn merged(&self, other: &Probes) -> Probes {
        Probes {
            ping: self.ping.iter().chain(&other.ping).cloned().collect(),
            tcp: self.tcp.iter().chain(&other.tcp).cloned().collect(),
            trace: self.trace.iter().chain(&other.trace).cloned().collect(),
        }
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn from_ms(ms: u32, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms.into())
    }
}

fn parse_all<T: FromStr<Err = TargetError>>(
    raw: &[String],
    key: impl Fn() -> String,
) -> Result<Vec<T>, ProbeError> {
    raw.iter()
        .map(|s| {
            s.parse().map_err(|e: TargetError| ProbeError {
                key: key(),
                message: e.to_string(),
            })
        })
        .collect()
}

fn within_to(within: Option<&Vec<IpNet>>) -> Option<v1::Within> {
    within.map(|nets| v1::Within {
        prefixes: nets.iter().map(ToString::to_string).collect(),
    })
}

fn within_from(
    within: Option<&v1::Within>,
    key: impl Fn() -> String,
) -> Result<Option<Vec<IpNet>>, ProbeError> {
    within
        .map(|w| {
            w.prefixes
                .iter()
                .map(|p| {
                    p.parse().map_err(|e| ProbeError {
                        key: key(),
                        message: format!("{p:?} is not a prefix: {e}"),
                    })
                })
                .collect()
        })
        .transpose()
}

impl From<&Probes> for v1::ProbeSet {
    fn from(p: &Probes) -> Self {
        v1::ProbeSet {
            ping: p
                .ping
                .iter()
                .map(|p| v1::PingSpec {
                    targets: p.targets.iter().map(ToString::to_string).collect(),
                    interval_ms: ms(p.interval),
                    timeout_ms: ms(p.timeout()),
                    payload_bytes: u32::try_from(p.payload).unwrap_or(u32::MAX),
                    within: within_to(p.within.as_ref()),
                })
                .collect(),
            tcp: p
                .tcp
                .iter()
                .map(|p| v1::TcpSpec {
                    targets: p.targets.iter().map(ToString::to_string).collect(),
                    interval_ms: ms(p.interval),
                    timeout_ms: ms(p.timeout()),
                    within: within_to(p.within.as_ref()),
                })
                .collect(),
            trace: p
                .trace
                .iter()
                .map(|p| v1::TraceSpec {
                    targets: p.targets.iter().map(ToString::to_string).collect(),
                    method: match p.method {
                        TraceMethod::Udp => v1::TraceMethod::Udp,
                        TraceMethod::Icmp => v1::TraceMethod::Icmp,
                    } as i32,
                    interval_ms: ms(p.interval),
                    timeout_ms: ms(p.timeout),
                    max_hops: p.max_hops.into(),
                    probes_per_hop: p.probes_per_hop.into(),
                    port: p.port.into(),
                    within: within_to(p.within.as_ref()),
                })
                .collect(),
        }
    }
}

impl TryFrom<&v1::ProbeSet> for Probes {
    type Error = ProbeError;
    /// Decodes a collector assignment with the config file's defaults, and
    /// validates it.
    fn try_from(set: &v1::ProbeSet) -> Result<Self, ProbeError> {
        let bad = |key: String, message: &str| ProbeError {
            key,
            message: message.to_owned(),
        };
        let mut probes = Probes::default();
        for (i, s) in set.ping.iter().enumerate() {
            probes.ping.push(PingProbe {
                targets: parse_all(&s.targets, || format!("ping[{i}].targets"))?,
                interval: from_ms(s.interval_ms, one_second()),
                timeout: (s.timeout_ms > 0).then(|| Duration::from_millis(s.timeout_ms.into())),
                payload: if s.payload_bytes == 0 {
                    default_payload()
                } else {
                    usize::try_from(s.payload_bytes).unwrap_or(usize::MAX)
                },
                within: within_from(s.within.as_ref(), || format!("ping[{i}].within"))?,
            });
        }
        for (i, s) in set.tcp.iter().enumerate() {
            probes.tcp.push(TcpProbe {
                targets: parse_all(&s.targets, || format!("tcp[{i}].targets"))?,
                interval: from_ms(s.interval_ms, ten_seconds()),
                timeout: (s.timeout_ms > 0).then(|| Duration::from_millis(s.timeout_ms.into())),
                within: within_from(s.within.as_ref(), || format!("tcp[{i}].within"))?,
            });
        }
        for (i, s) in set.trace.iter().enumerate() {
            let key = |k: &str| format!("trace[{i}].{k}");
            probes.trace.push(TraceProbe {
                targets: parse_all(&s.targets, || key("targets"))?,
                method: match v1::TraceMethod::try_from(s.method) {
                    Ok(v1::TraceMethod::Udp | v1::TraceMethod::Unspecified) => TraceMethod::Udp,
                    Ok(v1::TraceMethod::Icmp) => TraceMethod::Icmp,
                    Err(_) => return Err(bad(key("method"), "unknown method")),
                },
                interval: from_ms(s.interval_ms, five_minutes()),
                timeout: from_ms(s.timeout_ms, two_seconds()),
                max_hops: if s.max_hops == 0 {
                    default_max_hops()
                } else {
                    u8::try_from(s.max_hops).map_err(|_| bad(key("max-hops"), "too large"))?
                },
                probes_per_hop: if s.probes_per_hop == 0 {
                    default_probes_per_hop()
                } else {
                    u8::try_from(s.probes_per_hop)
                        .map_err(|_| bad(key("probes-per-hop"), "too large"))?
                },
                port: if s.port == 0 {
                    TRACE_PORT
                } else {
                    u16::try_from(s.port).map_err(|_| bad(key("port"), "not a port"))?
                },
                within: within_from(s.within.as_ref(), || key("within"))?,
            });
        }
        probes.validate()?;
        Ok(probes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Probes, String> {
        let p: Probes = toml::from_str(text).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn defaults_follow_the_interval() {
        let p = parse(
            r#"
            [[ping]]
            targets = ["127.0.0.1", "localhost", "127.0.1.0/30"]
            [[ping]]
            targets = ["::1"]
            interval = "500ms"
            [[tcp]]
            targets = ["127.0.0.1:22", "[::1]:443", "localhost:80"]
            interval = "1m"
            [[tcp]]
            targets = ["127.0.0.1:22"]
            interval = "3s"
            [[trace]]
            targets = ["127.0.0.1"]
            method = "icmp"
            "#,
        )
        .unwrap();
        assert_eq!(p.ping[0].timeout(), Duration::from_secs(1));
        assert_eq!(p.ping[1].timeout(), Duration::from_millis(500));
        assert_eq!(p.ping[0].payload, 56);
        assert_eq!(p.tcp[0].timeout(), Duration::from_secs(10));
        assert_eq!(p.tcp[1].timeout(), Duration::from_secs(3));
        assert_eq!(p.tcp[0].targets[1].to_string(), "[::1]:443");
        assert_eq!(p.trace[0].method, TraceMethod::Icmp);
        assert_eq!((p.trace[0].max_hops, p.trace[0].probes_per_hop), (30, 3));
        // Round trip through the wire shape keeps every value.
        let wire = v1::ProbeSet::from(&p);
        let back = Probes::try_from(&wire).unwrap();
        assert_eq!(back.ping[0].timeout(), p.ping[0].timeout());
        assert_eq!(back.tcp, {
            let mut t = p.tcp.clone();
            for x in &mut t {
                x.timeout = Some(x.timeout());
            }
            t
        });
        assert_eq!(back.trace, p.trace);
    }

    #[test]
    fn out_of_bounds_values_name_their_key() {
        let cases = [
            (
                "[[ping]]\ntargets = []",
                "ping[0].targets: must not be empty",
            ),
            (
                "[[ping]]\ntargets = [\"::1\"]\ninterval = \"50ms\"",
                "ping[0].interval",
            ),
            (
                "[[tcp]]\ntargets = [\"127.0.0.1:1\"]\ntimeout = \"61s\"",
                "tcp[0].timeout: must be between 1ms and 60s",
            ),
            (
                "[[trace]]\ntargets = [\"::1\"]\nmax-hops = 0",
                "trace[0].max-hops",
            ),
            (
                "[[ping]]\ntargets = [\"::1\"]\npayload = 9000",
                "ping[0].payload",
            ),
            ("[[tcp]]\ntargets = [\"127.0.0.1\"]", "expected HOST:PORT"),
            ("[[tcp]]\ntargets = [\"::1:80\"]", "expected HOST:PORT"),
            ("[[tcp]]\ntargets = [\"127.0.0.1:0\"]", "expected HOST:PORT"),
            ("[[ping]]\ntargets = [\"10.0.0.0/8\"]", "at most 65536"),
            (
                "[[ping]]\ntargets = [\"::1\"]\nport = 1",
                "unknown field `port`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn endpoints_parse_every_form() {
        let e: Endpoint = "[fd00::/126]:80".parse().unwrap();
        assert_eq!(e.target.addresses().len(), 4);
        assert_eq!(e.to_string(), "[fd00::/126]:80");
        let e: Endpoint = "Example.net:443".parse().unwrap();
        assert_eq!(e.to_string(), "example.net:443");
        assert!("[::1:80".parse::<Endpoint>().is_err());
    }

    #[test]
    fn a_bad_central_assignment_is_refused_with_the_key() {
        let set = v1::ProbeSet {
            trace: vec![v1::TraceSpec {
                targets: vec!["127.0.0.1".into()],
                max_hops: 300,
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = Probes::try_from(&set).unwrap_err();
        assert_eq!(e.key, "trace[0].max-hops");
        let set = v1::ProbeSet {
            ping: vec![v1::PingSpec {
                targets: vec!["bad host".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(Probes::try_from(&set).unwrap_err().key, "ping[0].targets");
    }

    #[test]
    fn a_restriction_travels_with_the_assignment() {
        let mut p = Probes::default();
        p.tcp.push(TcpProbe {
            targets: vec!["db.test:5432".parse().unwrap()],
            interval: ten_seconds(),
            timeout: None,
            within: Some(vec!["127.0.0.0/24".parse().unwrap()]),
        });
        p.ping.push(PingProbe {
            targets: vec!["127.0.0.1".parse().unwrap()],
            interval: one_second(),
            timeout: None,
            payload: default_payload(),
            within: None,
        });
        let set = v1::ProbeSet::from(&p);
        assert!(set.ping[0].within.is_none(), "unrestricted stays absent");
        let back = Probes::try_from(&set).unwrap();
        assert_eq!(back.tcp[0].within, p.tcp[0].within);
        assert_eq!(back.ping[0].within, None);
        // A restriction to nothing is not "anywhere".
        let none = v1::ProbeSet {
            trace: vec![v1::TraceSpec {
                targets: vec!["x.test".into()],
                within: Some(v1::Within::default()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            Probes::try_from(&none).unwrap().trace[0].within,
            Some(vec![])
        );
        let bad = v1::ProbeSet {
            ping: vec![v1::PingSpec {
                targets: vec!["x.test".into()],
                within: Some(v1::Within {
                    prefixes: vec!["10.0.0.0/33".into()],
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(Probes::try_from(&bad).unwrap_err().key, "ping[0].within");
    }
}
