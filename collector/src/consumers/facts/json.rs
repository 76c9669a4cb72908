//! Host-fact records as the API's JSON: field names as in the protocol,
//! times in Unix milliseconds (`*_ms`) like the rest of the API, statuses
//! in lower case.

use serde_json::{Value, json};
use sonde_proto::v1::{
    ListeningPort, ListeningPorts, PublicIpResult, PublicIpStatus, RemoteCheckResult, SystemMetrics,
};

use super::ms;

/// `PUBLIC_IP_STATUS_OK` → `ok` (also the exported `status` field).
pub fn ip_status(s: PublicIpStatus) -> String {
    s.as_str_name()
        .trim_start_matches("PUBLIC_IP_STATUS_")
        .to_ascii_lowercase()
}

#[allow(clippy::cast_precision_loss)]
fn millis(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub fn port(p: &ListeningPort) -> Value {
    json!({
        "protocol": p.protocol,
        "address": p.address,
        "port": p.port,
        "program": p.program,
        "pid": p.pid,
        "uid": p.uid,
        "user": p.user,
        "loopback": p.loopback,
        "service": p.service,
        "risk": p.risk,
    })
}

pub fn ports(s: &ListeningPorts) -> Value {
    json!({
        "at_ms": ms(s.at_unix_nanos),
        "ports": s.ports.iter().map(port).collect::<Vec<_>>(),
        "error": s.error,
    })
}

pub fn public_ip(r: &PublicIpResult) -> Value {
    json!({
        "checked_ms": ms(r.checked_unix_nanos),
        "family": r.family,
        "status": ip_status(r.status()),
        "address": r.address,
        "answers": r.answers.iter().map(|a| json!({
            "source": a.source,
            "address": a.address,
            "error": a.error,
            "duration_ms": millis(a.duration_nanos),
        })).collect::<Vec<_>>(),
    })
}

pub fn remote(r: &RemoteCheckResult) -> Value {
    json!({
        "started_ms": ms(r.started_unix_nanos),
        "target": r.target,
        "address": r.address,
        "open": r.open,
        "checked": r.checked,
        "refused": r.refused,
        "timed_out": r.timed_out,
        "failed": r.failed,
        "error": r.error,
        "duration_ms": millis(r.duration_nanos),
    })
}

pub fn metrics(m: &SystemMetrics) -> Value {
    json!({
        "at_ms": ms(m.at_unix_nanos),
        "interval_s": m.interval_seconds,
        "cpu_utilisation": m.cpu_utilisation,
        "cpu_count": m.cpu_count,
        "load": [m.load1, m.load5, m.load15],
        "memory_total_bytes": m.memory_total_bytes,
        "memory_available_bytes": m.memory_available_bytes,
        "memory_used_bytes": m.memory_used_bytes,
        "swap_total_bytes": m.swap_total_bytes,
        "swap_used_bytes": m.swap_used_bytes,
        "disks": m.disks.iter().map(|d| json!({
            "mount": d.mount,
            "device": d.device,
            "fs_type": d.fs_type,
            "total_bytes": d.total_bytes,
            "used_bytes": d.used_bytes,
            "available_bytes": d.available_bytes,
            "read_bytes_per_second": d.read_bytes_per_second,
            "write_bytes_per_second": d.write_bytes_per_second,
        })).collect::<Vec<_>>(),
        "interfaces": m.interfaces.iter().map(|i| json!({
            "name": i.name,
            "rx_bytes_per_second": i.rx_bytes_per_second,
            "tx_bytes_per_second": i.tx_bytes_per_second,
            "rx_packets_per_second": i.rx_packets_per_second,
            "tx_packets_per_second": i.tx_packets_per_second,
            "rx_errors": i.rx_errors,
            "tx_errors": i.tx_errors,
            "rx_drops": i.rx_drops,
            "tx_drops": i.tx_drops,
        })).collect::<Vec<_>>(),
        "error": m.error,
    })
}
