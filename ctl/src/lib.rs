//! sondectl: the operators' command-line view of the collector's API.
//!
//! It is an ordinary API client: it presents the viewer or admin
//! certificate named in its config, and the collector decides what that
//! certificate may see. The binary is a thin `main` around [`run`], which
//! returns the text to print so tests can call it directly.

pub mod cli;
pub mod client;
pub mod config;
pub mod table;

use std::time::SystemTime;

use serde_json::Value;

use crate::cli::Command;
use crate::client::{Api, ApiError};
use crate::config::Loaded;

/// Runs one API command and returns what to print.
pub async fn run(loaded: &Loaded, command: &Command, json: bool) -> Result<String, ApiError> {
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
        Command::CheckConfig => Ok(String::new()),
    }
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
