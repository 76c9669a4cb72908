//! `sondectl agent NAME`: one agent and its host facts as text — identity
//! and liveness, public IP with its history, listening ports with their
//! ratings (riskiest first), remote-check results and the latest system
//! metrics.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::Value;

use crate::table::{self, cell};

/// Bytes in binary units.
#[allow(clippy::cast_precision_loss)]
fn bytes(v: Option<&Value>) -> String {
    let Some(b) = v.and_then(Value::as_f64) else {
        return "-".to_owned();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = b;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{x:.0} {}", units[u])
    } else {
        format!("{x:.1} {}", units[u])
    }
}

fn rate(v: Option<&Value>) -> String {
    format!("{}/s", bytes(v))
}

fn list(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

fn risk_rank(p: &Value) -> u8 {
    match p.get("risk").and_then(Value::as_str) {
        Some("high") => 0,
        Some("medium") => 1,
        _ => 2,
    }
}

/// The text of `GET /api/v1/agents/NAME`.
pub fn render(v: &Value, now: SystemTime) -> String {
    let mut out = String::new();
    identity(&mut out, v, now);
    public_ip(&mut out, v);
    ports(&mut out, v);
    remote_checks(&mut out, v);
    metrics(&mut out, v);
    out
}

/// Who the agent is and whether it is alive.
fn identity(out: &mut String, v: &Value, now: SystemTime) {
    let a = v.get("agent");
    let g = |k: &str| cell(a.and_then(|a| a.get(k)));
    let _ = writeln!(
        out,
        "{}/{}  {}  connected={}",
        g("tenant"),
        g("name"),
        g("state"),
        g("connected")
    );
    let _ = writeln!(
        out,
        "host {}  {}  agent {}  from {}  last heartbeat {}",
        g("hostname"),
        g("os"),
        g("agent_version"),
        g("remote_addr"),
        table::age_ms(a.and_then(|a| a.get("last_heartbeat_ms")), now)
    );
}

/// Current addresses, their history, and failing sources.
fn public_ip(out: &mut String, v: &Value) {
    let ip = v.get("public_ip");
    let _ = writeln!(
        out,
        "\nPUBLIC IP  ipv4 {}  ipv6 {}",
        cell(ip.and_then(|i| i.get("ipv4"))),
        cell(ip.and_then(|i| i.get("ipv6")))
    );
    let history: Vec<Vec<String>> = list(ip.and_then(|i| i.get("history")))
        .iter()
        .map(|h| {
            vec![
                cell(h.get("family")),
                cell(h.get("address")),
                table::time_ms(h.get("first_seen_ms")),
                table::time_ms(h.get("last_seen_ms")),
            ]
        })
        .collect();
    if !history.is_empty() {
        out.push_str(&table::render(
            &["FAMILY", "ADDRESS", "FIRST SEEN", "LAST SEEN"],
            &history,
        ));
    }
    for l in list(ip.and_then(|i| i.get("lookups"))) {
        if l.get("status").and_then(Value::as_str) != Some("ok") {
            let _ = writeln!(
                out,
                "last {} lookup: {}",
                cell(l.get("family")),
                cell(l.get("status"))
            );
        }
        for a in list(l.get("answers")) {
            if a.get("error")
                .and_then(Value::as_str)
                .is_some_and(|e| !e.is_empty())
            {
                let _ = writeln!(out, "  {}: {}", cell(a.get("source")), cell(a.get("error")));
            }
        }
    }
}

/// Listening ports, riskiest first.
fn ports(out: &mut String, v: &Value) {
    let ports = v.get("ports");
    let mut rows = list(ports.and_then(|p| p.get("ports")));
    rows.sort_by_key(risk_rank);
    let _ = writeln!(out, "\nLISTENING PORTS ({})", rows.len());
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|p| {
            vec![
                cell(p.get("risk")),
                cell(p.get("protocol")),
                format!("{}:{}", cell(p.get("address")), cell(p.get("port"))),
                cell(p.get("service")),
                cell(p.get("program")),
                cell(p.get("pid")),
                cell(p.get("user")),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table::render(
            &[
                "RISK", "PROTO", "ADDRESS", "SERVICE", "PROGRAM", "PID", "USER",
            ],
            &rows,
        ));
    }
}

/// Remote-check results.
fn remote_checks(out: &mut String, v: &Value) {
    let remote = list(v.get("remote_checks"));
    if !remote.is_empty() {
        let _ = writeln!(out, "\nREMOTE CHECKS");
        let rows: Vec<Vec<String>> = remote
            .iter()
            .map(|r| {
                let open: Vec<String> = list(r.get("open"))
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                vec![
                    cell(r.get("target")),
                    cell(r.get("address")),
                    if open.is_empty() {
                        "-".to_owned()
                    } else {
                        open.join(",")
                    },
                    table::time_ms(r.get("started_ms")),
                    cell(r.get("error")),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["TARGET", "ADDRESS", "OPEN", "CHECKED", "ERROR"],
            &rows,
        ));
    }
}

/// The latest system metrics.
fn metrics(out: &mut String, v: &Value) {
    let Some(m) = v.get("metrics").filter(|m| !m.is_null()) else {
        out.push_str("\nMETRICS none yet\n");
        return;
    };
    let f = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let load = list(m.get("load"));
    let _ = writeln!(
        out,
        "\nMETRICS at {}: cpu {:.1}% of {}  load {}  memory {} used, {} available of {}",
        table::time_ms(m.get("at_ms")),
        f("cpu_utilisation") * 100.0,
        cell(m.get("cpu_count")),
        load.iter()
            .map(|l| format!("{:.2}", l.as_f64().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(" "),
        bytes(m.get("memory_used_bytes")),
        bytes(m.get("memory_available_bytes")),
        bytes(m.get("memory_total_bytes")),
    );
    let disks: Vec<Vec<String>> = list(m.get("disks"))
        .iter()
        .map(|d| {
            vec![
                cell(d.get("mount")),
                cell(d.get("fs_type")),
                bytes(d.get("used_bytes")),
                bytes(d.get("total_bytes")),
                rate(d.get("read_bytes_per_second")),
                rate(d.get("write_bytes_per_second")),
            ]
        })
        .collect();
    if !disks.is_empty() {
        out.push_str(&table::render(
            &["MOUNT", "FS", "USED", "SIZE", "READ", "WRITE"],
            &disks,
        ));
    }
    let nics: Vec<Vec<String>> = list(m.get("interfaces"))
        .iter()
        .map(|i| {
            vec![
                cell(i.get("name")),
                rate(i.get("rx_bytes_per_second")),
                rate(i.get("tx_bytes_per_second")),
                format!(
                    "{:.1}",
                    i.get("rx_packets_per_second")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0)
                ),
                format!(
                    "{:.1}",
                    i.get("tx_packets_per_second")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0)
                ),
                format!("{}/{}", cell(i.get("rx_errors")), cell(i.get("tx_errors"))),
                format!("{}/{}", cell(i.get("rx_drops")), cell(i.get("tx_drops"))),
            ]
        })
        .collect();
    if !nics.is_empty() {
        out.push_str(&table::render(
            &[
                "INTERFACE",
                "RX",
                "TX",
                "RX PKT/S",
                "TX PKT/S",
                "ERR RX/TX",
                "DROP RX/TX",
            ],
            &nics,
        ));
    }
}

/// `agent settings`: shows, changes (`PUT`) or resets (`DELETE`) an
/// agent's settings.
pub async fn settings(
    api: &crate::client::Api,
    action: &crate::cli::AgentAction,
    json: bool,
) -> Result<String, crate::client::ApiError> {
    let crate::cli::AgentAction::Settings {
        name,
        tenant,
        interval,
        grace,
        schedule,
        reset,
    } = action;
    let mut path = format!("agents/{}/settings", crate::segment(name));
    if let Some(t) = tenant {
        let _ = write!(path, "?tenant={}", crate::segment(t));
    }
    let v = if *reset {
        api.delete(&path).await?
    } else if interval.is_some() || grace.is_some() || schedule.is_some() {
        // What is not given keeps its current setting.
        let now = api.get(&path, &[]).await?;
        let own = &now["settings"];
        let keep = |given: &Option<String>, key: &str| {
            given.clone().map_or_else(
                || own.get(key).cloned().unwrap_or(Value::Null),
                Value::String,
            )
        };
        let body = serde_json::json!({
            "heartbeat_interval": keep(interval, "heartbeat_interval"),
            "grace": keep(grace, "grace"),
            "schedule": keep(schedule, "schedule"),
        });
        api.put(&path, &body).await?
    } else {
        api.get(&path, &[]).await?
    };
    if json {
        return Ok(crate::pretty(&v));
    }
    let rows: Vec<Vec<String>> = ["heartbeat_interval", "grace", "schedule"]
        .iter()
        .map(|k| {
            vec![
                (*k).replace('_', " "),
                cell(v["settings"].get(*k)),
                cell(v["defaults"].get(*k)),
                cell(v["effective"].get(*k)),
            ]
        })
        .collect();
    Ok(format!(
        "{}/{}\n{}",
        cell(v.get("tenant")),
        cell(v.get("name")),
        table::render(&["SETTING", "OWN", "CONFIG", "APPLIES"], &rows)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_an_agent_without_facts() {
        assert_eq!(bytes(Some(&Value::from(512))), "512 B");
        assert_eq!(
            bytes(Some(&Value::from(3 * 1024 * 1024 + 512 * 1024))),
            "3.5 MiB"
        );
        let v = serde_json::json!({
            "agent": {"tenant": "acme", "name": "edge-1", "state": "up", "connected": true},
            "public_ip": {"ipv4": null, "ipv6": null, "history": [], "lookups": []},
            "ports": null, "remote_checks": [], "metrics": null
        });
        let text = render(&v, SystemTime::now());
        assert!(
            text.starts_with("acme/edge-1  up  connected=true"),
            "{text}"
        );
        assert!(text.contains("LISTENING PORTS (0)"), "{text}");
        assert!(text.contains("METRICS none yet"), "{text}");
    }
}
