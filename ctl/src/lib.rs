//! sondectl: the operators' command-line view of the collector's API.
//!
//! It is an ordinary API client: it presents the viewer or admin
//! certificate named in its config, and the collector decides what that
//! certificate may see. The binary is a thin `main` around [`run`], which
//! returns the text to print so tests can call it directly.

pub mod agent;
pub mod alerts;
pub mod checks;
pub mod cli;
pub mod client;
pub mod config;
pub mod grid;
pub mod table;

use std::time::SystemTime;

use serde_json::Value;

use crate::cli::{Color, Command};
use crate::client::{Api, ApiError};
use crate::config::Loaded;

/// Runs one API command and returns what to print. Every value passes
/// `table::cell`, which escapes it; the whole text is escaped again as a
/// backstop (line breaks kept), except the grid with its own colours;
/// JSON answers get `\uXXXX` for what `serde_json` leaves raw.
pub async fn run(loaded: &Loaded, command: &Command, json: bool) -> Result<String, ApiError> {
    let text = answer(loaded, command, json).await?;
    let grid = !json && matches!(command, Command::Prefix { cidr: Some(_), .. });
    Ok(if json {
        sonde_runtime::text::safe_json(&text).into_owned()
    } else if grid {
        // Built here from addresses, numbers and colour codes only; the
        // prefix in its title was parsed by the collector.
        text
    } else {
        sonde_runtime::text::safe_lines(&text).into_owned()
    })
}

async fn answer(loaded: &Loaded, command: &Command, json: bool) -> Result<String, ApiError> {
    let api = Api::new(loaded)?;
    match command {
        Command::Agents => {
            let v = api.get("agents", &[]).await?;
            Ok(if json {
                pretty(&v)
            } else {
                agents_table(&v, SystemTime::now())
            })
        }
        Command::Agent {
            action: Some(action),
            ..
        } => agent::settings(&api, action, json).await,
        Command::Agent {
            name: Some(name),
            tenant,
            action: None,
        } => {
            let query: Vec<(&str, String)> = tenant.iter().map(|t| ("tenant", t.clone())).collect();
            let v = api
                .get(&format!("agents/{}", segment(name)), &query)
                .await?;
            Ok(if json {
                pretty(&v)
            } else {
                agent::render(&v, SystemTime::now())
            })
        }
        Command::Events {
            after,
            limit,
            agent,
        } => {
            let mut query = vec![("after", after.to_string()), ("limit", limit.to_string())];
            if let Some(a) = agent {
                query.push(("agent", a.clone()));
            }
            let v = api.get("events", &query).await?;
            Ok(if json { pretty(&v) } else { events_table(&v) })
        }
        Command::Targets {
            agent,
            probe,
            prefix,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [("agent", agent), ("probe", probe), ("prefix", prefix)] {
                if let Some(v) = v {
                    query.push((k, v.clone()));
                }
            }
            let v = api.get("targets", &query).await?;
            Ok(if json { pretty(&v) } else { targets_table(&v) })
        }
        Command::Prefix { cidr: None, .. } => {
            let v = api.get("prefixes", &[]).await?;
            Ok(if json { pretty(&v) } else { prefixes_table(&v) })
        }
        Command::Prefix {
            cidr: Some(cidr),
            color,
        } => {
            let v = api.get(&format!("prefixes/{cidr}"), &[]).await?;
            let colour = match color {
                Color::Always => true,
                Color::Never => false,
                Color::Auto => {
                    use std::io::IsTerminal as _;
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            Ok(if json {
                pretty(&v)
            } else {
                grid::render(&v, colour)
            })
        }
        Command::Outages { open, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if *open {
                query.push(("open", "true".to_owned()));
            }
            let v = api.get("outages", &query).await?;
            Ok(if json { pretty(&v) } else { outages_table(&v) })
        }
        Command::Alerts { .. } | Command::Silence { .. } => alerts::run(&api, command, json).await,
        Command::Checks { action } => checks::run(&api, action, json).await,
        Command::Agent { name: None, .. } | Command::CheckConfig => Ok(String::new()),
    }
}

/// `text` as one URL path segment: anything but letters, digits, `.`,
/// `_` and `-` percent-encoded (the collector then names what is wrong).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A number with a fixed precision, or `-`.
fn num(v: Option<&Value>, unit: &str) -> String {
    v.and_then(Value::as_f64)
        .map_or_else(|| "-".to_owned(), |f| format!("{f:.2}{unit}"))
}

fn targets_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(v, "targets")
        .iter()
        .map(|t| {
            let a = t.get("averages");
            let w = |k: &str, f: &str| a.and_then(|a| a.get(k)).and_then(|w| w.get(f));
            vec![
                format!(
                    "{}/{}",
                    table::cell(t.get("tenant")),
                    table::cell(t.get("agent"))
                ),
                table::cell(t.get("probe")),
                table::cell(t.get("target")),
                table::cell(t.get("state")),
                num(
                    a.and_then(|a| a.get("latest"))
                        .and_then(|l| l.get("rtt_ms")),
                    "ms",
                ),
                num(w("1m", "mean_ms"), "ms"),
                num(w("1m", "loss_pct"), "%"),
                num(w("1h", "mean_ms"), "ms"),
                num(w("1h", "loss_pct"), "%"),
                num(w("24h", "mean_ms"), "ms"),
                num(w("24h", "loss_pct"), "%"),
            ]
        })
        .collect();
    table::render(
        &[
            "AGENT", "PROBE", "TARGET", "STATE", "LAST", "1M", "LOSS-1M", "1H", "LOSS-1H", "24H",
            "LOSS-24H",
        ],
        &rows,
    )
}

fn prefixes_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(v, "prefixes")
        .iter()
        .map(|p| {
            ["prefix", "monitored", "down", "series"]
                .iter()
                .map(|k| table::cell(p.get(*k)))
                .collect()
        })
        .collect();
    table::render(&["PREFIX", "MONITORED", "DOWN", "SERIES"], &rows)
}

fn outages_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(v, "outages")
        .iter()
        .map(|o| {
            vec![
                table::cell(o.get("id")),
                table::cell(o.get("tenant")),
                table::cell(o.get("scope")),
                table::cell(o.get("subject")),
                table::time_ms(o.get("start_ms")),
                match o.get("end_ms") {
                    None | Some(Value::Null) => "open".to_owned(),
                    end => table::time_ms(end),
                },
                num(o.get("duration_s"), "s"),
                table::cell(o.get("lost")),
            ]
        })
        .collect();
    table::render(
        &[
            "ID", "TENANT", "SCOPE", "SUBJECT", "START", "END", "DURATION", "LOST",
        ],
        &rows,
    )
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn rows<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn agents_table(v: &Value, now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = rows(v, "agents")
        .iter()
        .map(|a| {
            vec![
                table::cell(a.get("tenant")),
                table::cell(a.get("name")),
                table::cell(a.get("state")),
                if a.get("connected").and_then(Value::as_bool) == Some(true) {
                    "yes".to_owned()
                } else {
                    "no".to_owned()
                },
                table::age_ms(a.get("last_heartbeat_ms"), now),
                table::cell(a.get("agent_version")),
                table::cell(a.get("hostname")),
                table::cell(a.get("remote_addr")),
            ]
        })
        .collect();
    table::render(
        &[
            "TENANT",
            "NAME",
            "STATE",
            "CONNECTED",
            "LAST-HEARTBEAT",
            "VERSION",
            "HOSTNAME",
            "REMOTE",
        ],
        &rows,
    )
}

fn events_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(v, "events")
        .iter()
        .map(|e| {
            vec![
                table::cell(e.get("id")),
                table::time_ms(e.get("at_ms")),
                table::cell(e.get("tenant")),
                table::cell(e.get("agent")),
                table::cell(e.get("kind")),
                match e.get("detail") {
                    None | Some(Value::Null) => "-".to_owned(),
                    Some(d) => d.to_string(),
                },
            ]
        })
        .collect();
    table::render(&["ID", "TIME", "TENANT", "AGENT", "KIND", "DETAIL"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn agents_table_shows_state_and_heartbeat_age() {
        let v = json!({"agents": [{
            "tenant": "acme", "name": "edge-1", "state": "up", "connected": true,
            "last_heartbeat_ms": 95_000, "agent_version": "0.1.0",
            "hostname": "h1", "remote_addr": "127.0.0.1:5000"
        }]});
        let out = agents_table(&v, UNIX_EPOCH + Duration::from_secs(100));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("TENANT  NAME"), "{out}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "acme",
                "edge-1",
                "up",
                "yes",
                "5s",
                "ago",
                "0.1.0",
                "h1",
                "127.0.0.1:5000"
            ]
        );
    }

    #[test]
    fn events_table_shows_detail_json() {
        let v = json!({"events": [{"id": 7, "at_ms": 0, "tenant": "t", "agent": "a",
            "kind": "agent-missing", "detail": {"grace_ms": 30000}}]});
        let out = events_table(&v);
        assert!(out.contains("1970-01-01T00:00:00Z"), "{out}");
        assert!(out.contains("agent-missing"), "{out}");
        assert!(out.contains(r#"{"grace_ms":30000}"#), "{out}");
    }
}
