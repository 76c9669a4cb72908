//! `sonde-agent probe-once`: runs every configured probe once (the config
//! file's and the stored collector assignment) and prints one line per
//! result, for an operator trying a config by hand. Nothing is sent to the
//! collector and the spool is not touched.
//!
//! Output, one result per line (traceroute adds one indented line per hop):
//!
//! ```text
//! ping  TARGET ADDRESS ok 0.052ms ttl=64
//! ping  TARGET ADDRESS timeout
//! tcp   TARGET ADDRESS:PORT ok 0.110ms
//! tcp   TARGET ADDRESS:PORT refused (Connection refused (os error 111))
//! trace TARGET ADDRESS udp reached hops=3 path=5c1f0e0a9b2d7c44
//!   1 10.1.0.1 0.061ms 0.032ms 0.030ms
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use futures_util::StreamExt as _;
use sonde_proto::v1::{PingStatus, Record, TcpStatus, TraceMethod, record};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::emit::Emitter;
use super::icmp;
use super::icmp_net::IcmpSockets;
use super::plan;
use super::resolve::{Names, SystemResolver};
use super::tcp::{self, SystemConnector};
use super::trace::{self, MAX_TRACES};
use super::trace_net::SystemTracer;
use crate::assignment;
use crate::config::Loaded;

fn ms(nanos: u64) -> String {
    // Nanoseconds to milliseconds with microsecond precision.
    #[allow(clippy::cast_precision_loss)]
    let v = nanos as f64 / 1e6;
    format!("{v:.3}ms")
}

/// `ResolveError` → `resolve-error`.
fn status_name<T: std::fmt::Debug>(s: T) -> String {
    let mut out = String::new();
    for (i, c) in format!("{s:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// One result as text (see the module doc); `true` if it succeeded.
pub fn format(record: &Record) -> (String, bool) {
    let mut out = String::new();
    let ok = match &record.kind {
        Some(record::Kind::Ping(p)) => {
            let _ = write!(out, "ping  {} {} ", p.target, or_dash(&p.address));
            match p.status() {
                PingStatus::Ok => {
                    let _ = write!(out, "ok {} ttl={}", ms(p.rtt_nanos), p.reply_ttl);
                }
                s => out.push_str(&with_error(&status_name(s), &p.error)),
            }
            p.status() == PingStatus::Ok
        }
        Some(record::Kind::Tcp(t)) => {
            let addr = if t.address.contains(':') {
                format!("[{}]:{}", t.address, t.port)
            } else if t.address.is_empty() {
                "-".to_owned()
            } else {
                format!("{}:{}", t.address, t.port)
            };
            let _ = write!(out, "tcp   {} {addr} ", t.target);
            match t.status() {
                TcpStatus::Ok => {
                    let _ = write!(out, "ok {}", ms(t.connect_nanos));
                }
                s => out.push_str(&with_error(&status_name(s), &t.error)),
            }
            t.status() == TcpStatus::Ok
        }
        Some(record::Kind::Trace(t)) => {
            let method = match t.method() {
                TraceMethod::Icmp => "icmp",
                _ => "udp",
            };
            let _ = write!(out, "trace {} {} {method} ", t.target, or_dash(&t.address));
            if t.error.is_empty() {
                let reached = if t.reached { "reached" } else { "not-reached" };
                let _ = write!(
                    out,
                    "{reached} hops={} path={:016x}",
                    t.hops.len(),
                    t.path_hash
                );
                for h in &t.hops {
                    let _ = write!(out, "\n  {} {}", h.ttl, or_dash(&h.address));
                    for r in &h.rtt_nanos {
                        let _ = write!(out, " {}", ms(*r));
                    }
                }
            } else {
                out.push_str(&with_error("error", &t.error));
            }
            t.error.is_empty() && t.reached
        }
        Some(record::Kind::Gap(g)) => {
            let _ = write!(out, "gap   {} results dropped: {}", g.dropped, g.reason);
            false
        }
        Some(record::Kind::Lag(l)) => {
            let _ = write!(out, "lag   {} {} probes late", l.probe, l.late_probes);
            true
        }
        Some(
            fact @ (record::Kind::PublicIp(_)
            | record::Kind::Ports(_)
            | record::Kind::RemoteCheck(_)
            | record::Kind::Metrics(_)),
        ) => return format_fact(fact),
        None => return (String::new(), true),
    };
    (out, ok)
}

/// A host-fact record as text; `true` if it is complete.
fn format_fact(kind: &record::Kind) -> (String, bool) {
    let mut out = String::new();
    let ok = match kind {
        record::Kind::PublicIp(r) => {
            let status = r.status();
            let _ = write!(
                out,
                "public-ip {} {} {}",
                r.family,
                or_dash(&r.address),
                status_name(status)
            );
            for a in &r.answers {
                let _ = write!(
                    out,
                    "\n  {} {}",
                    a.source,
                    with_error(or_dash(&a.address), &a.error)
                );
            }
            status == sonde_proto::v1::PublicIpStatus::Ok
        }
        record::Kind::Ports(p) => {
            let _ = write!(out, "ports {} listening", p.ports.len());
            for l in &p.ports {
                let _ = write!(
                    out,
                    "\n  {} {} {} {} {} {}",
                    l.protocol,
                    l.address,
                    l.port,
                    or_dash(&l.program),
                    or_dash(&l.service),
                    l.risk
                );
            }
            p.error.is_empty()
        }
        record::Kind::RemoteCheck(r) => {
            let open: Vec<String> = r.open.iter().map(ToString::to_string).collect();
            let _ = write!(
                out,
                "remote {} {} open=[{}]",
                r.target,
                or_dash(&r.address),
                open.join(",")
            );
            out.push_str(&with_error("", &r.error));
            r.error.is_empty()
        }
        record::Kind::Metrics(m) => {
            let _ = write!(
                out,
                "metrics cpu={:.2} load={:.2} mem-used={}",
                m.cpu_utilisation, m.load1, m.memory_used_bytes
            );
            m.error.is_empty()
        }
        _ => true,
    };
    (out, ok)
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn with_error(status: &str, error: &str) -> String {
    if error.is_empty() {
        status.to_owned()
    } else {
        format!("{status} ({error})")
    }
}

/// Runs every probe once; prints results to stdout in order (ping, TCP,
/// traceroute); returns whether all succeeded.
pub async fn run(loaded: &Loaded) -> anyhow::Result<bool> {
    crate::daemon::raise_fd_limit();
    let probes = loaded
        .config
        .probes()
        .merged(&assignment::load(&assignment::path(
            &loaded.config.state_dir,
        )));
    if probes.is_empty() {
        anyhow::bail!("no probes configured: add [[ping]], [[tcp]] or [[trace]] sections");
    }
    let mut names = Names::default();
    let now = Instant::now();
    names.track(&plan::hostnames(&probes), now);
    let refreshed = names
        .refresh(&SystemResolver, Duration::from_secs(3600), now)
        .await;
    let mut records = Vec::new();
    for (host, error) in &refreshed.failed {
        records.extend(plan::resolve_failures(
            &probes,
            host,
            error,
            sonde_runtime::clock::unix_nanos(),
        ));
    }
    let targets = plan::build(&probes, &names);

    if !targets.ping.is_empty() {
        let (tx, mut rx) = mpsc::channel(targets.ping.len() + 16);
        let net = IcmpSockets::open()?;
        icmp::once(&net, &targets.ping, Emitter::new(tx, "ping")).await;
        // Results in target order.
        let order: BTreeMap<(String, String), usize> = targets
            .ping
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.label.to_string(), t.addr.to_string()), i))
            .collect();
        let mut pings = Vec::new();
        while let Ok(r) = rx.try_recv() {
            pings.push(r);
        }
        pings.sort_by_key(|r| match &r.kind {
            Some(record::Kind::Ping(p)) => order
                .get(&(p.target.clone(), p.address.clone()))
                .copied()
                .unwrap_or(usize::MAX),
            _ => usize::MAX,
        });
        records.extend(pings);
    }
    let tcp: Vec<Record> = futures_util::stream::iter(&targets.tcp)
        .map(|t| tcp::probe(&SystemConnector, t))
        .buffered(tcp::MAX_IN_FLIGHT)
        .collect()
        .await;
    records.extend(tcp);
    let sockets = SystemTracer::default();
    let paths: Vec<Record> = futures_util::stream::iter(&targets.trace)
        .map(|t| trace::trace(&sockets, t))
        .buffered(MAX_TRACES)
        .collect()
        .await;
    records.extend(paths);

    let mut all_ok = true;
    for r in &records {
        let (line, ok) = format(r);
        all_ok &= ok;
        println!("{line}");
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_proto::v1::{PingResult, TcpResult, TraceHop, TraceResult};

    #[test]
    fn lines_say_what_happened() {
        let ping = Record {
            kind: Some(record::Kind::Ping(PingResult {
                target: "localhost".into(),
                address: "::1".into(),
                rtt_nanos: 52_300,
                status: PingStatus::Ok as i32,
                reply_ttl: 64,
                ..Default::default()
            })),
        };
        assert_eq!(
            format(&ping),
            ("ping  localhost ::1 ok 0.052ms ttl=64".into(), true)
        );
        assert_eq!(status_name(PingStatus::ResolveError), "resolve-error");
        let tcp = Record {
            kind: Some(record::Kind::Tcp(TcpResult {
                target: "[::1]:9".into(),
                address: "::1".into(),
                port: 9,
                status: TcpStatus::Refused as i32,
                error: "Connection refused (os error 111)".into(),
                ..Default::default()
            })),
        };
        assert_eq!(
            format(&tcp),
            (
                "tcp   [::1]:9 [::1]:9 refused (Connection refused (os error 111))".into(),
                false
            )
        );
        let trace = Record {
            kind: Some(record::Kind::Trace(TraceResult {
                target: "t".into(),
                address: "10.0.0.9".into(),
                method: TraceMethod::Icmp as i32,
                reached: true,
                path_hash: 0xab,
                hops: vec![TraceHop {
                    ttl: 1,
                    address: String::new(),
                    rtt_nanos: vec![],
                    probes: 3,
                }],
                ..Default::default()
            })),
        };
        assert_eq!(
            format(&trace).0,
            "trace t 10.0.0.9 icmp reached hops=1 path=00000000000000ab\n  1 -"
        );
    }
}
