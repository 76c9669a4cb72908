//! `sondectl checks …`: heartbeat checks (`/api/v1/checks`). Creating
//! and rotating print the ping URL once: the collector keeps only a hash
//! of its token.

use std::fmt::Write as _;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Api, ApiError};
use crate::table::{cell, render, time_ms};

/// `sondectl checks …`.
#[derive(Clone, PartialEq, Eq, Subcommand)]
pub enum ChecksAction {
    /// List checks: state, last ping, next expected, last run's duration.
    List,
    /// Create a check (admin); prints its ping URL, shown only this once.
    Create {
        /// Its name (unique in the tenant).
        name: String,
        /// Simple check: a ping expected every PERIOD (default 1d) …
        #[arg(long, conflicts_with = "cron")]
        period: Option<String>,
        /// … or a cron check: at every tick of this five-field expression
        #[arg(long)]
        cron: Option<String>,
        /// … in this IANA time zone (default UTC).
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
        /// How late a ping may be before the check is down (default 1h).
        #[arg(long)]
        grace: Option<String>,
        /// Only watched while this [[alerting.schedule]] is open.
        #[arg(long)]
        schedule: Option<String>,
        /// For /ping/<ping-key>/<slug> (default: made from the name).
        #[arg(long)]
        slug: Option<String>,
        /// Operators: the tenant it belongs to.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Pause a check: no deadline until it is pinged or resumed (admin).
    Pause { id: i64 },
    /// Resume a paused check: new again, until its next ping (admin).
    Resume { id: i64 },
    /// Give a check a new token: the old URL stops working at once (admin).
    Rotate { id: i64 },
    /// Delete a check and its ping log (admin).
    Delete { id: i64 },
    /// A check's ping log, newest first.
    Pings {
        id: i64,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

const HEADERS: [&str; 9] = [
    "ID",
    "TENANT",
    "NAME",
    "STATE",
    "EXPECTS",
    "GRACE",
    "LAST PING",
    "NEXT DUE",
    "LAST RUN",
];

fn row(c: &Value) -> Vec<String> {
    let expects = match (c.get("cron"), c.get("period")) {
        (Some(Value::String(cron)), _) => {
            format!("cron {cron} {}", cell(c.get("timezone")))
        }
        (_, period) => format!("every {}", cell(period)),
    };
    let run = c
        .get("last_duration_ms")
        .and_then(Value::as_i64)
        .map_or_else(
            || "-".to_owned(),
            |ms| format!("{}.{}s", ms / 1000, (ms % 1000) / 100),
        );
    vec![
        cell(c.get("id")),
        cell(c.get("tenant")),
        cell(c.get("name")),
        cell(c.get("state")),
        expects,
        cell(c.get("grace")),
        time_ms(c.get("last_ping_ms")),
        time_ms(c.get("expected_ms")),
        run,
    ]
}

/// `checks list`.
pub fn table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .get("checks")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(row)
        .collect();
    render(&HEADERS, &rows)
}

/// A check and, when the answer holds one, its ping URL.
fn with_url(v: &Value) -> String {
    let check = v.get("check").unwrap_or(v);
    let mut out = render(&HEADERS, &[row(check)]);
    if let Some(url) = v.get("ping_url").and_then(Value::as_str) {
        let _ = write!(
            out,
            "\nping URL (shown once; the collector keeps only a hash of its token):\n{url}\n"
        );
    } else if let Some(token) = v.get("token").and_then(Value::as_str) {
        let _ = write!(
            out,
            "\ntoken (shown once; the collector has no ping listener configured): {token}\n"
        );
    }
    out
}

/// `checks pings`.
pub fn pings(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .get("pings")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|p| {
            vec![
                time_ms(p.get("at_ms")),
                cell(p.get("kind")),
                cell(p.get("exit_status")),
                cell(p.get("duration_ms")),
                cell(p.get("source")),
                cell(p.get("method")),
                cell(p.get("user_agent")),
                cell(p.get("body")).chars().take(60).collect(),
            ]
        })
        .collect();
    render(
        &[
            "TIME",
            "KIND",
            "EXIT",
            "RUN MS",
            "SOURCE",
            "METHOD",
            "USER AGENT",
            "BODY",
        ],
        &rows,
    )
}

/// Runs `checks …`.
pub async fn run(api: &Api, action: &ChecksAction, json: bool) -> Result<String, ApiError> {
    let v = match action {
        ChecksAction::List => api.get("checks", &[]).await?,
        ChecksAction::Create {
            name,
            period,
            cron,
            timezone,
            grace,
            schedule,
            slug,
            tenant,
        } => {
            let mut body = json!({ "name": name });
            for (k, v) in [
                ("period", period),
                ("cron", cron),
                ("timezone", timezone),
                ("grace", grace),
                ("schedule", schedule),
                ("slug", slug),
                ("tenant", tenant),
            ] {
                if let Some(v) = v {
                    body[k] = Value::String(v.clone());
                }
            }
            api.post("checks", &body).await?
        }
        ChecksAction::Pause { id } => api.post(&format!("checks/{id}/pause"), &json!({})).await?,
        ChecksAction::Resume { id } => api.post(&format!("checks/{id}/resume"), &json!({})).await?,
        ChecksAction::Rotate { id } => api.post(&format!("checks/{id}/rotate"), &json!({})).await?,
        ChecksAction::Delete { id } => {
            api.delete(&format!("checks/{id}")).await?;
            return Ok(if json {
                String::new()
            } else {
                format!("check {id} deleted\n")
            });
        }
        ChecksAction::Pings { id, limit } => {
            api.get(
                &format!("checks/{id}/pings"),
                &[("limit", limit.to_string())],
            )
            .await?
        }
    };
    if json {
        return Ok(crate::pretty(&v));
    }
    Ok(match action {
        ChecksAction::List => table(&v),
        ChecksAction::Pings { .. } => pings(&v),
        _ => with_url(&v),
    })
}
