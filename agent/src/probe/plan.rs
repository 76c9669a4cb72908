//! From probe definitions (config file plus collector assignment) and the
//! current name resolutions to the per-address target lists the engines
//! run. Pure functions: the runner calls them whenever either input changes.

use std::collections::{BTreeSet, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use sonde_proto::v1::{PingResult, PingStatus, Record, TcpResult, TcpStatus, record};
use sonde_runtime::probes::Probes;
use sonde_runtime::target::Target;

use super::icmp::PingTarget;
use super::resolve::Names;
use super::tcp::TcpTarget;
use super::trace::{self, TraceTarget};

/// What each engine runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ping: Vec<PingTarget>,
    pub tcp: Vec<TcpTarget>,
    pub trace: Vec<TraceTarget>,
}

/// Every host name the definitions use.
pub fn hostnames(probes: &Probes) -> BTreeSet<String> {
    let ping = probes.ping.iter().flat_map(|p| &p.targets);
    let tcp = probes
        .tcp
        .iter()
        .flat_map(|p| p.targets.iter().map(|e| &e.target));
    let trace = probes.trace.iter().flat_map(|p| &p.targets);
    ping.chain(tcp)
        .chain(trace)
        .filter_map(|t| match t {
            Target::Host(h) => Some(h.clone()),
            _ => None,
        })
        .collect()
}

/// The addresses probed for `target`: a host name's resolved addresses
/// inside `within` (when the collector restricts it), every address of
/// an address or range.
fn addresses(target: &Target, names: &Names, within: Option<&[IpNet]>) -> Vec<IpAddr> {
    match target {
        Target::Host(h) => names
            .get(h)
            .iter()
            .copied()
            .filter(|a| allowed(within, *a))
            .collect(),
        other => other.addresses(),
    }
}

fn allowed(within: Option<&[IpNet]>, a: IpAddr) -> bool {
    within.is_none_or(|nets| nets.iter().any(|n| n.contains(&a)))
}

/// Keeps the first of equal entries.
fn dedup<T: Eq + Hash + Clone>(items: &mut Vec<T>) {
    let mut seen = HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

/// The target lists for `probes` with the addresses in `names`.
pub fn build(probes: &Probes, names: &Names) -> Plan {
    let mut plan = Plan::default();
    for p in &probes.ping {
        for t in &p.targets {
            let label: Arc<str> = t.to_string().into();
            for addr in addresses(t, names, p.within.as_deref()) {
                plan.ping.push(PingTarget {
                    label: label.clone(),
                    addr,
                    interval: p.interval,
                    timeout: p.timeout(),
                    payload: p.payload,
                });
            }
        }
    }
    for p in &probes.tcp {
        for e in &p.targets {
            let label: Arc<str> = e.to_string().into();
            for addr in addresses(&e.target, names, p.within.as_deref()) {
                plan.tcp.push(TcpTarget {
                    label: label.clone(),
                    addr: SocketAddr::new(addr, e.port),
                    interval: p.interval,
                    timeout: p.timeout(),
                });
            }
        }
    }
    for p in &probes.trace {
        for t in &p.targets {
            let label: Arc<str> = t.to_string().into();
            for addr in addresses(t, names, p.within.as_deref()) {
                plan.trace.push(TraceTarget {
                    label: label.clone(),
                    addr,
                    method: p.method,
                    interval: p.interval,
                    timeout: p.timeout,
                    max_hops: p.max_hops,
                    probes_per_hop: p.probes_per_hop,
                    port: p.port,
                });
            }
        }
    }
    dedup(&mut plan.ping);
    dedup(&mut plan.tcp);
    dedup(&mut plan.trace);
    plan
}

/// One result per definition naming `host`, saying it did not resolve.
pub fn resolve_failures(probes: &Probes, host: &str, error: &str, now_ns: i64) -> Vec<Record> {
    let error = format!("resolving {host}: {error}");
    host_errors(probes, host, &|_| Some(error.clone()), now_ns)
}

/// The collector restricts a tenant's managed host names to its granted
/// prefixes (`within`) and checked its own resolution; this checks the
/// agent's. An address outside is not probed ([`build`]); a definition
/// left with no address to probe gets one error result per resolution
/// (status resolve-error, so the series shows it), and one that still
/// probes some address does not (an error result there would count as a
/// lost probe of a series that answers); both are logged.
pub fn outside_grants(probes: &Probes, host: &str, names: &Names, now_ns: i64) -> Vec<Record> {
    let error = |within: Option<&[IpNet]>| {
        let (inside, outside): (Vec<IpAddr>, Vec<IpAddr>) =
            names.get(host).iter().partition(|a| allowed(within, **a));
        if outside.is_empty() {
            return None;
        }
        let outside: Vec<String> = outside.iter().map(ToString::to_string).collect();
        let what = format!(
            "{} outside the prefixes granted to this agent's tenant; not probed",
            outside.join(", ")
        );
        tracing::warn!(host = %sonde_runtime::text::safe(host), "{what}");
        inside
            .is_empty()
            .then(|| format!("resolving {host}: {what}"))
    };
    host_errors(probes, host, &error, now_ns)
}

/// An error result for each definition naming `host` for which `error`
/// (given the definition's `within`) says one.
fn host_errors(
    probes: &Probes,
    host: &str,
    error: &dyn Fn(Option<&[IpNet]>) -> Option<String>,
    now_ns: i64,
) -> Vec<Record> {
    let is_host = |t: &Target| matches!(t, Target::Host(h) if h == host);
    let mut out = Vec::new();
    for p in &probes.ping {
        let Some(error) = error(p.within.as_deref()) else {
            continue;
        };
        for t in p.targets.iter().filter(|t| is_host(t)) {
            out.push(record::Kind::Ping(PingResult {
                target: t.to_string(),
                sent_unix_nanos: now_ns,
                status: PingStatus::ResolveError as i32,
                error: error.clone(),
                ..PingResult::default()
            }));
        }
    }
    for p in &probes.tcp {
        let Some(error) = error(p.within.as_deref()) else {
            continue;
        };
        for e in p.targets.iter().filter(|e| is_host(&e.target)) {
            out.push(record::Kind::Tcp(TcpResult {
                target: e.to_string(),
                port: e.port.into(),
                sent_unix_nanos: now_ns,
                status: TcpStatus::ResolveError as i32,
                error: error.clone(),
                ..TcpResult::default()
            }));
        }
    }
    for p in &probes.trace {
        let Some(error) = error(p.within.as_deref()) else {
            continue;
        };
        for t in p.targets.iter().filter(|t| is_host(t)) {
            let failed = trace::failed(&t.to_string(), "", p.method, now_ns, error.clone());
            out.extend(failed.kind);
        }
    }
    out.into_iter()
        .map(|kind| Record { kind: Some(kind) })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::probe::resolve::Resolve;

    struct Fake(Mutex<HashMap<String, Vec<IpAddr>>>);
    impl Resolve for Fake {
        async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
            self.0
                .lock()
                .unwrap()
                .get(host)
                .cloned()
                .ok_or_else(|| std::io::Error::other("not found"))
        }
    }

    fn probes(text: &str) -> Probes {
        let p: Probes = toml::from_str(text).unwrap();
        p.validate().unwrap();
        p
    }

    #[tokio::test]
    async fn expands_ranges_resolves_names_and_dedups() {
        let p = probes(
            r#"
            [[ping]]
            targets = ["127.0.0.1", "127.0.1.0/30", "here", "127.0.0.1"]
            [[tcp]]
            targets = ["here:22", "[::1]:80"]
            [[trace]]
            targets = ["here", "gone"]
            "#,
        );
        assert_eq!(
            hostnames(&p),
            BTreeSet::from(["gone".into(), "here".into()])
        );
        let fake = Fake(Mutex::new(HashMap::from([(
            "here".to_owned(),
            vec!["127.0.0.9".parse().unwrap(), "::1".parse().unwrap()],
        )])));
        let mut names = Names::default();
        let now = tokio::time::Instant::now();
        names.track(&hostnames(&p), now);
        let r = names.refresh(&fake, Duration::from_secs(60), now).await;
        assert_eq!(r.failed.len(), 1);
        let plan = build(&p, &names);
        let ping: Vec<String> = plan
            .ping
            .iter()
            .map(|t| format!("{}={}", t.label, t.addr))
            .collect();
        assert_eq!(
            ping,
            [
                "127.0.0.1=127.0.0.1",
                "127.0.1.0/30=127.0.1.1",
                "127.0.1.0/30=127.0.1.2",
                "here=127.0.0.9",
                "here=::1"
            ]
        );
        let tcp: Vec<String> = plan.tcp.iter().map(|t| t.addr.to_string()).collect();
        assert_eq!(tcp, ["127.0.0.9:22", "[::1]:22", "[::1]:80"]);
        assert_eq!(plan.trace.len(), 2);
        let failures = resolve_failures(&p, "gone", "not found", 5);
        assert_eq!(failures.len(), 1);
        let Some(record::Kind::Trace(t)) = &failures[0].kind else {
            panic!("not a trace")
        };
        assert_eq!((t.target.as_str(), t.address.as_str()), ("gone", ""));
        assert!(t.error.contains("resolving gone: not found"));
        let here = resolve_failures(&p, "here", "x", 5);
        let kinds: Vec<&str> = here
            .iter()
            .map(|r| match &r.kind {
                Some(record::Kind::Ping(p)) => {
                    assert_eq!(p.status(), PingStatus::ResolveError);
                    "ping"
                }
                Some(record::Kind::Tcp(t)) => {
                    assert_eq!((t.status(), t.port), (TcpStatus::ResolveError, 22));
                    "tcp"
                }
                Some(record::Kind::Trace(_)) => "trace",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["ping", "tcp", "trace"]);
    }

    /// A managed host name restricted to its tenant's grants: the agent's
    /// own resolution is checked again. An address outside is not probed;
    /// a definition left with nothing to probe gets an error result, one
    /// that still probes an address inside does not.
    #[tokio::test]
    async fn host_names_are_probed_only_inside_their_grants() {
        let mut p = probes(
            r#"
            [[ping]]
            targets = ["elsewhere", "split"]
            [[tcp]]
            targets = ["elsewhere:22"]
            "#,
        );
        let grants: Vec<IpNet> = vec!["127.0.0.0/24".parse().unwrap()];
        p.ping[0].within = Some(grants.clone());
        p.tcp[0].within = Some(grants);
        let fake = Fake(Mutex::new(HashMap::from([
            ("elsewhere".to_owned(), vec!["127.0.1.5".parse().unwrap()]),
            (
                "split".to_owned(),
                vec!["127.0.0.7".parse().unwrap(), "::1".parse().unwrap()],
            ),
        ])));
        let mut names = Names::default();
        let now = tokio::time::Instant::now();
        names.track(&hostnames(&p), now);
        let r = names.refresh(&fake, Duration::from_secs(60), now).await;
        assert_eq!(r.resolved, ["elsewhere", "split"]);
        let plan = build(&p, &names);
        let ping: Vec<String> = plan
            .ping
            .iter()
            .map(|t| format!("{}={}", t.label, t.addr))
            .collect();
        assert_eq!(ping, ["split=127.0.0.7"]);
        assert!(plan.tcp.is_empty());

        let errors = outside_grants(&p, "elsewhere", &names, 5);
        let texts: Vec<(&str, &str)> = errors
            .iter()
            .map(|r| match &r.kind {
                Some(record::Kind::Ping(x)) => {
                    assert_eq!(x.status(), PingStatus::ResolveError);
                    ("ping", x.error.as_str())
                }
                Some(record::Kind::Tcp(x)) => {
                    assert_eq!(x.status(), TcpStatus::ResolveError);
                    ("tcp", x.error.as_str())
                }
                _ => ("other", ""),
            })
            .collect();
        let why = "resolving elsewhere: 127.0.1.5 outside the prefixes granted to this agent's tenant; not probed";
        assert_eq!(texts, [("ping", why), ("tcp", why)]);
        assert!(outside_grants(&p, "split", &names, 5).is_empty());

        // Unrestricted (an operator tenant, the agent's own file): all.
        p.ping[0].within = None;
        let plan = build(&p, &names);
        assert_eq!(plan.ping.len(), 3);
        assert!(
            outside_grants(&p, "elsewhere", &names, 5)
                .iter()
                .all(|r| !matches!(r.kind, Some(record::Kind::Ping(_))))
        );
    }
}
