//! Ingest-log entries as line-protocol points: the schema of what sonde
//! writes to InfluxDB.
//!
//! | measurement | one point per | fields |
//! | --- | --- | --- |
//! | `ping` | echo request | `rtt_ms` (answered only), `lost` (0/1), `status`, `error`, `reply_ttl`, `address` |
//! | `tcp` | connect attempt | `connect_ms` (ok only), `failed` (0/1), `status`, `error`, `port`, `address` |
//! | `trace` | traceroute | `hops`, `reached`, `rtt_ms` (reached only), `path_hash` (hex), `method`, `error` |
//! | `trace_hop` | hop of a traceroute | `address` (`*` silent), `probes`, `answered`, `rtt_ms`, `rtt_min_ms`, `rtt_max_ms` |
//! | `heartbeat` | heartbeat | `seq`, `uptime_s`, `clock_skew_ms` (collector receive − agent send) |
//! | `spool_gap` | gap record | `dropped`, `from_ns`, `reason` |
//! | `scheduler_lag` | lag record | `late_probes`, `max_lag_ms` |
//! | `public_ip` | lookup (tag `family`) | `status` (ok/disagree/failed), `address`, `sources`, `answered` |
//! | `listening_ports` | port snapshot | `ports`, `exposed`, `high`, `medium`, `low` |
//! | `remote_check` | check pass (tag `target`) | `open`, `open_ports` ("22,443"), `checked`, `refused`, `timed_out`, `failed`, `duration_ms`, `error` |
//! | `system` | metrics interval | `cpu_utilisation` (0..1), `cpu_count`, `load1/5/15`, `memory_{total,available,used}_bytes`, `swap_{total,used}_bytes` |
//! | `system_disk` | file system (tag `mount`) | `device`, `fs_type`, `{total,used,available}_bytes`, `{read,write}_bytes_per_second` |
//! | `system_net` | interface (tag `interface`) | `{rx,tx}_{bytes,packets}_per_second`, `{rx,tx}_{errors,drops}` (in the interval) |
//!
//! Tags are `tenant`, `agent`, and for results `target` and `prefix` (the
//! /24 or /64 of the address); `trace_hop` adds `hop` (the TTL, at most the
//! trace's max-hops) and `scheduler_lag` adds `probe`; host facts tag
//! what the host has a handful of (family, mount, interface, configured
//! remote-check target). Nothing with
//! unbounded values (addresses of hostname targets, error texts, path
//! hashes) is a tag, so series cardinality stays that of the targets.
//! Timestamps are the agent's send time in nanoseconds.

use sonde_proto::v1::{TraceMethod, record};

use super::line::{Field, Point};
use crate::log::{Body, Entry, LoggedBatch};
use crate::observation::{Observation, Probe, observe, prefix_of};

/// The points of one stored ingest-log entry (decoded here; the exporter
/// gets entries decoded once, see [`of`]).
pub fn points(entry: &LoggedBatch) -> Result<Vec<Point>, String> {
    of(&Entry::decode(entry.clone()))
}

/// The points of one ingest-log entry; `Err` names what could not be
/// decoded (the entry is then skipped, logged and counted by the caller).
pub fn of(entry: &Entry) -> Result<Vec<Point>, String> {
    let stored = &entry.stored;
    let base = |m: &'static str, t: i64| {
        Point::new(m, t)
            .tag("tenant", stored.tenant.clone())
            .tag("agent", stored.agent.clone())
    };
    match &entry.body {
        Body::Heartbeat(hb) => {
            let received_ns = stored.received_ms.saturating_mul(1_000_000);
            let sent = if hb.sent_unix_nanos > 0 {
                hb.sent_unix_nanos
            } else {
                received_ns
            };
            #[allow(clippy::cast_precision_loss)]
            let point = base("heartbeat", sent)
                .field("seq", big(hb.seq))
                .field("uptime_s", Field::F64(hb.uptime_ms as f64 / 1e3))
                .field(
                    "clock_skew_ms",
                    Field::F64((received_ns - sent) as f64 / 1e6),
                );
            Ok(vec![point])
        }
        Body::Batch(batch) => {
            let mut out = Vec::with_capacity(batch.records.len());
            for kind in batch.records.iter().filter_map(|r| r.kind.as_ref()) {
                record_points(kind, &base, &mut out);
            }
            Ok(out)
        }
        Body::Undecodable(e) => Err(e.clone()),
    }
}

#[allow(clippy::cast_precision_loss)]
fn record_points(
    kind: &record::Kind,
    base: &dyn Fn(&'static str, i64) -> Point,
    out: &mut Vec<Point>,
) {
    match kind {
        record::Kind::Gap(g) => out.push(
            base("spool_gap", g.to_unix_nanos)
                .field("dropped", big(g.dropped))
                .field("from_ns", Field::I64(g.from_unix_nanos))
                .field("reason", Field::Str(g.reason.clone())),
        ),
        record::Kind::Lag(l) => out.push(
            base("scheduler_lag", l.at_unix_nanos)
                .tag("probe", l.probe.clone())
                .field("late_probes", big(l.late_probes))
                .field("max_lag_ms", Field::F64(l.max_lag_nanos as f64 / 1e6)),
        ),
        record::Kind::Metrics(m) => metrics_points(m, base, out),
        record::Kind::PublicIp(r) => out.push(
            base("public_ip", r.checked_unix_nanos)
                .tag("family", r.family.clone())
                .field(
                    "status",
                    Field::Str(crate::consumers::facts::json::ip_status(r.status())),
                )
                .field("address", Field::Str(r.address.clone()))
                .field("sources", Field::I64(count(r.answers.len())))
                .field(
                    "answered",
                    Field::I64(count(
                        r.answers.iter().filter(|a| !a.address.is_empty()).count(),
                    )),
                ),
        ),
        record::Kind::Ports(p) => {
            let rated =
                |risk: &str| Field::I64(count(p.ports.iter().filter(|l| l.risk == risk).count()));
            out.push(
                base("listening_ports", p.at_unix_nanos)
                    .field("ports", Field::I64(count(p.ports.len())))
                    .field(
                        "exposed",
                        Field::I64(count(p.ports.iter().filter(|l| !l.loopback).count())),
                    )
                    .field("high", rated("high"))
                    .field("medium", rated("medium"))
                    .field("low", rated("low")),
            );
        }
        record::Kind::RemoteCheck(r) => {
            let open: Vec<String> = r.open.iter().map(ToString::to_string).collect();
            out.push(
                base("remote_check", r.started_unix_nanos)
                    .tag("target", r.target.clone())
                    .field("open", Field::I64(count(r.open.len())))
                    .field("open_ports", Field::Str(open.join(",")))
                    .field("checked", Field::I64(r.checked.into()))
                    .field("refused", Field::I64(r.refused.into()))
                    .field("timed_out", Field::I64(r.timed_out.into()))
                    .field("failed", Field::I64(r.failed.into()))
                    .field("duration_ms", Field::F64(r.duration_nanos as f64 / 1e6))
                    .field("error", Field::Str(r.error.clone())),
            );
        }
        _ => {
            if let Some(o) = observe(kind) {
                result_points(&o, base, out);
            }
        }
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn big(n: u64) -> Field {
    Field::I64(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `system`, one `system_disk` per file system, one `system_net` per
/// interface.
fn metrics_points(
    m: &sonde_proto::v1::SystemMetrics,
    base: &dyn Fn(&'static str, i64) -> Point,
    out: &mut Vec<Point>,
) {
    let t = m.at_unix_nanos;
    out.push(
        base("system", t)
            .field("cpu_utilisation", Field::F64(m.cpu_utilisation))
            .field("cpu_count", Field::I64(m.cpu_count.into()))
            .field("load1", Field::F64(m.load1))
            .field("load5", Field::F64(m.load5))
            .field("load15", Field::F64(m.load15))
            .field("memory_total_bytes", big(m.memory_total_bytes))
            .field("memory_available_bytes", big(m.memory_available_bytes))
            .field("memory_used_bytes", big(m.memory_used_bytes))
            .field("swap_total_bytes", big(m.swap_total_bytes))
            .field("swap_used_bytes", big(m.swap_used_bytes)),
    );
    for d in &m.disks {
        out.push(
            base("system_disk", t)
                .tag("mount", d.mount.clone())
                .field("device", Field::Str(d.device.clone()))
                .field("fs_type", Field::Str(d.fs_type.clone()))
                .field("total_bytes", big(d.total_bytes))
                .field("used_bytes", big(d.used_bytes))
                .field("available_bytes", big(d.available_bytes))
                .field("read_bytes_per_second", Field::F64(d.read_bytes_per_second))
                .field(
                    "write_bytes_per_second",
                    Field::F64(d.write_bytes_per_second),
                ),
        );
    }
    for i in &m.interfaces {
        out.push(
            base("system_net", t)
                .tag("interface", i.name.clone())
                .field("rx_bytes_per_second", Field::F64(i.rx_bytes_per_second))
                .field("tx_bytes_per_second", Field::F64(i.tx_bytes_per_second))
                .field("rx_packets_per_second", Field::F64(i.rx_packets_per_second))
                .field("tx_packets_per_second", Field::F64(i.tx_packets_per_second))
                .field("rx_errors", big(i.rx_errors))
                .field("tx_errors", big(i.tx_errors))
                .field("rx_drops", big(i.rx_drops))
                .field("tx_drops", big(i.tx_drops)),
        );
    }
}

fn result_points(
    o: &Observation<'_>,
    base: &dyn Fn(&'static str, i64) -> Point,
    out: &mut Vec<Point>,
) {
    let tagged = |m: &'static str| {
        base(m, o.time_ns).tag("target", o.target.clone()).tag(
            "prefix",
            o.address
                .map(|a| prefix_of(a).to_string())
                .unwrap_or_default(),
        )
    };
    let with_common = |mut p: Point| {
        p = p.field("status", Field::Str(o.status.to_owned()));
        if !o.error.is_empty() {
            p = p.field("error", Field::Str(o.error.to_owned()));
        }
        if let Some(a) = o.address.filter(|a| a.to_string() != o.target) {
            p = p.field("address", Field::Str(a.to_string()));
        }
        p
    };
    let failed = Field::I64(i64::from(!o.ok()));
    match o.probe {
        Probe::Ping => {
            let mut p = with_common(tagged("ping").field("lost", failed));
            if let Some(rtt) = o.rtt_ms {
                p = p.field("rtt_ms", Field::F64(rtt));
            }
            if o.reply_ttl > 0 {
                p = p.field("reply_ttl", Field::I64(o.reply_ttl.into()));
            }
            out.push(p);
        }
        Probe::Tcp => {
            let mut p = with_common(tagged("tcp").field("failed", failed));
            if let Some(rtt) = o.rtt_ms {
                p = p.field("connect_ms", Field::F64(rtt));
            }
            if let Some(port) = o.port {
                p = p.field("port", Field::I64(port.into()));
            }
            out.push(p);
        }
        Probe::Trace => {
            let Some(t) = o.trace else { return };
            let method = match TraceMethod::try_from(t.method) {
                Ok(TraceMethod::Icmp) => "icmp",
                Ok(TraceMethod::Udp) => "udp",
                _ => "unknown",
            };
            let mut p = with_common(tagged("trace"))
                .field("hops", Field::I64(count(t.hops.len())))
                .field("reached", Field::Bool(t.reached))
                .field("path_hash", Field::Str(format!("{:016x}", t.path_hash)))
                .field("method", Field::Str(method.to_owned()));
            if let Some(rtt) = o.rtt_ms {
                p = p.field("rtt_ms", Field::F64(rtt));
            }
            out.push(p);
            for hop in &t.hops {
                out.push(hop_point(tagged("trace_hop"), hop));
            }
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn hop_point(p: Point, hop: &sonde_proto::v1::TraceHop) -> Point {
    let address = if hop.address.is_empty() {
        "*"
    } else {
        hop.address.as_str()
    };
    let mut p = p
        .tag("hop", hop.ttl.to_string())
        .field("address", Field::Str(address.to_owned()))
        .field("probes", Field::I64(hop.probes.into()))
        .field("answered", Field::I64(count(hop.rtt_nanos.len())));
    if !hop.rtt_nanos.is_empty() {
        let ms = |n: u64| n as f64 / 1e6;
        let sum: f64 = hop.rtt_nanos.iter().map(|n| ms(*n)).sum();
        let min = hop.rtt_nanos.iter().min().copied().unwrap_or(0);
        let max = hop.rtt_nanos.iter().max().copied().unwrap_or(0);
        p = p
            .field("rtt_ms", Field::F64(sum / hop.rtt_nanos.len() as f64))
            .field("rtt_min_ms", Field::F64(ms(min)))
            .field("rtt_max_ms", Field::F64(ms(max)));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogKind;
    use prost::Message as _;
    use sonde_proto::v1::{
        Heartbeat, PingResult, PingStatus, Record, ResultBatch, TraceHop, TraceResult,
    };

    fn entry(kind: LogKind, payload: Vec<u8>) -> LoggedBatch {
        LoggedBatch {
            id: 1,
            kind,
            tenant: "acme".into(),
            agent: "edge-1".into(),
            spool_id: 1,
            batch_seq: 1,
            received_ms: 2_000,
            results: 0,
            payload,
        }
    }

    fn lines(points: &[Point]) -> String {
        let mut s = String::new();
        for p in points {
            p.write_line(&mut s);
        }
        s
    }

    #[test]
    fn schema_of_each_measurement() {
        let batch = ResultBatch {
            batch_seq: 1,
            sealed_unix_nanos: 0,
            records: vec![
                Record {
                    kind: Some(record::Kind::Ping(PingResult {
                        target: "10.1.2.0/24".into(),
                        address: "10.1.2.7".into(),
                        sent_unix_nanos: 1_000,
                        rtt_nanos: 250_000,
                        status: PingStatus::Ok.into(),
                        reply_ttl: 64,
                        ..PingResult::default()
                    })),
                },
                Record {
                    kind: Some(record::Kind::Trace(TraceResult {
                        target: "10.9.0.1".into(),
                        address: "10.9.0.1".into(),
                        method: TraceMethod::Udp.into(),
                        started_unix_nanos: 3_000,
                        hops: vec![
                            TraceHop {
                                ttl: 1,
                                address: String::new(),
                                rtt_nanos: vec![],
                                probes: 3,
                            },
                            TraceHop {
                                ttl: 2,
                                address: "10.9.0.1".into(),
                                rtt_nanos: vec![1_000_000, 3_000_000],
                                probes: 3,
                            },
                        ],
                        reached: true,
                        path_hash: 0xab,
                        error: String::new(),
                    })),
                },
            ],
        };
        let got = lines(&points(&entry(LogKind::Batch, batch.encode_to_vec())).unwrap());
        let want = "\
ping,agent=edge-1,prefix=10.1.2.0/24,target=10.1.2.7,tenant=acme lost=0i,status=\"ok\",rtt_ms=0.25,reply_ttl=64i 1000
trace,agent=edge-1,prefix=10.9.0.0/24,target=10.9.0.1,tenant=acme status=\"ok\",hops=2i,reached=t,path_hash=\"00000000000000ab\",method=\"udp\",rtt_ms=1 3000
trace_hop,agent=edge-1,hop=1,prefix=10.9.0.0/24,target=10.9.0.1,tenant=acme address=\"*\",probes=3i,answered=0i 3000
trace_hop,agent=edge-1,hop=2,prefix=10.9.0.0/24,target=10.9.0.1,tenant=acme address=\"10.9.0.1\",probes=3i,answered=2i,rtt_ms=2,rtt_min_ms=1,rtt_max_ms=3 3000
";
        assert_eq!(got, want);

        let hb = Heartbeat {
            seq: 7,
            uptime_ms: 1_500,
            sent_unix_nanos: 1_999_000_000,
        };
        let got = lines(&points(&entry(LogKind::Heartbeat, hb.encode_to_vec())).unwrap());
        assert_eq!(
            got,
            "heartbeat,agent=edge-1,tenant=acme seq=7i,uptime_s=1.5,clock_skew_ms=1 1999000000\n"
        );
        assert!(points(&entry(LogKind::Batch, vec![0xff, 0xff])).is_err());
    }

    #[test]
    fn schema_of_host_facts() {
        use sonde_proto::v1::{
            InterfaceMetrics, ListeningPort, ListeningPorts, PublicIpResult, PublicIpStatus,
            SystemMetrics,
        };
        let record = |kind| Record { kind: Some(kind) };
        let batch = ResultBatch {
            batch_seq: 1,
            sealed_unix_nanos: 0,
            records: vec![
                record(record::Kind::Metrics(SystemMetrics {
                    at_unix_nanos: 10,
                    cpu_utilisation: 0.25,
                    cpu_count: 2,
                    load1: 1.5,
                    memory_total_bytes: 1000,
                    memory_available_bytes: 600,
                    memory_used_bytes: 400,
                    interfaces: vec![InterfaceMetrics {
                        name: "eth0".into(),
                        rx_bytes_per_second: 100.0,
                        tx_drops: 2,
                        ..InterfaceMetrics::default()
                    }],
                    ..SystemMetrics::default()
                })),
                record(record::Kind::PublicIp(PublicIpResult {
                    checked_unix_nanos: 20,
                    family: "ipv4".into(),
                    address: "203.0.113.7".into(),
                    status: PublicIpStatus::Ok.into(),
                    answers: Vec::new(),
                })),
                record(record::Kind::Ports(ListeningPorts {
                    at_unix_nanos: 30,
                    ports: vec![ListeningPort {
                        risk: "high".into(),
                        ..ListeningPort::default()
                    }],
                    error: String::new(),
                })),
            ],
        };
        let got = lines(&points(&entry(LogKind::Batch, batch.encode_to_vec())).unwrap());
        let want = "\
system,agent=edge-1,tenant=acme cpu_utilisation=0.25,cpu_count=2i,load1=1.5,load5=0,load15=0,memory_total_bytes=1000i,memory_available_bytes=600i,memory_used_bytes=400i,swap_total_bytes=0i,swap_used_bytes=0i 10
system_net,agent=edge-1,interface=eth0,tenant=acme rx_bytes_per_second=100,tx_bytes_per_second=0,rx_packets_per_second=0,tx_packets_per_second=0,rx_errors=0i,tx_errors=0i,rx_drops=0i,tx_drops=2i 10
public_ip,agent=edge-1,family=ipv4,tenant=acme status=\"ok\",address=\"203.0.113.7\",sources=0i,answered=0i 20
listening_ports,agent=edge-1,tenant=acme ports=1i,exposed=1i,high=1i,medium=0i,low=0i 30
";
        assert_eq!(got, want);
    }
}
