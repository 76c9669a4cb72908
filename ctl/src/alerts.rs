//! `sondectl alerts` and `sondectl silence`: tables of the alerts API.

use serde_json::Value;

use crate::cli::{Command, SilenceAction};
use crate::client::{Api, ApiError};

use crate::table::{cell, render, time_ms};

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Alerts, then the recent notifications.
pub fn alerts(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "alerts")
        .iter()
        .map(|a| {
            let why = match (
                a.get("silenced_by").and_then(Value::as_array),
                a.get("suppressed_by"),
            ) {
                (Some(ids), _) if !ids.is_empty() => format!(
                    "silence {}",
                    ids.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                (_, Some(Value::String(by))) => format!("by {by}"),
                _ => String::new(),
            };
            vec![
                cell(a.get("status")),
                cell(a.get("severity")),
                cell(a.get("tenant")),
                cell(a.get("rule")),
                cell(a.get("summary")),
                time_ms(a.get("starts_ms")),
                time_ms(a.get("ends_ms")),
                if why.is_empty() { "-".to_owned() } else { why },
            ]
        })
        .collect();
    let mut out = render(
        &[
            "STATUS", "SEVERITY", "TENANT", "RULE", "SUMMARY", "SINCE", "RESOLVED", "MUTED",
        ],
        &rows,
    );
    let sent: Vec<Vec<String>> = list(v, "notifications")
        .iter()
        .map(|n| {
            vec![
                cell(n.get("id")),
                cell(n.get("state")),
                format!("{}/{}", cell(n.get("receiver")), cell(n.get("integration"))),
                time_ms(n.get("created_ms")),
                time_ms(n.get("sent_ms")),
                cell(n.get("attempts")),
                cell(n.get("title")),
                cell(n.get("last_error")),
            ]
        })
        .collect();
    if !sent.is_empty() {
        out.push_str("\nNotifications:\n");
        out.push_str(&render(
            &[
                "ID",
                "STATE",
                "RECEIVER",
                "QUEUED",
                "SENT",
                "TRIES",
                "TITLE",
                "LAST ERROR",
            ],
            &sent,
        ));
    }
    out
}

fn silence_row(s: &Value) -> Vec<String> {
    let matchers: Vec<String> = list(s, "matchers").iter().map(|m| cell(Some(m))).collect();
    vec![
        cell(s.get("id")),
        cell(s.get("state")),
        cell(s.get("tenant")),
        matchers.join(" "),
        time_ms(s.get("starts_ms")),
        time_ms(s.get("ends_ms")),
        cell(s.get("author")),
        cell(s.get("comment")),
    ]
}

const SILENCE_HEADERS: [&str; 8] = [
    "ID", "STATE", "TENANT", "MATCHERS", "STARTS", "ENDS", "AUTHOR", "COMMENT",
];

/// `silence list`.
pub fn silences(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "silences").iter().map(silence_row).collect();
    render(&SILENCE_HEADERS, &rows)
}

/// One silence (created or expired).
pub fn silence(v: &Value) -> String {
    render(&SILENCE_HEADERS, &[silence_row(v)])
}

/// Runs `alerts` and `silence …`.
pub async fn run(api: &Api, command: &Command, json: bool) -> Result<String, ApiError> {
    match command {
        Command::Alerts { status, history } => {
            let mut query = vec![("history", history.clone())];
            if let Some(s) = status {
                query.push(("status", s.clone()));
            }
            let v = api.get("alerts", &query).await?;
            Ok(if json { crate::pretty(&v) } else { alerts(&v) })
        }
        Command::Silence { action } => {
            let v = match action {
                SilenceAction::Add {
                    matchers,
                    duration,
                    ends,
                    starts,
                    comment,
                    tenant,
                } => {
                    let mut body = serde_json::json!({ "matchers": matchers, "comment": comment });
                    for (k, v) in [
                        ("duration", duration),
                        ("ends", ends),
                        ("starts", starts),
                        ("tenant", tenant),
                    ] {
                        if let Some(v) = v {
                            body[k] = Value::String(v.clone());
                        }
                    }
                    api.post("silences", &body).await?
                }
                SilenceAction::List { history } => {
                    api.get("silences", &[("history", history.clone())]).await?
                }
                SilenceAction::Expire { id } => api.delete(&format!("silences/{id}")).await?,
            };
            Ok(if json {
                crate::pretty(&v)
            } else {
                match action {
                    SilenceAction::List { .. } => silences(&v),
                    _ => silence(&v),
                }
            })
        }
        _ => unreachable!("only alert commands are routed here"),
    }
}
