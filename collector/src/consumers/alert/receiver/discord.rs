//! Discord webhooks (`POST https://discord.com/api/webhooks/ID/TOKEN`,
//! JSON, answered `204 No Content`). One embed per notification, coloured
//! by severity (green when all resolved), one field per alert, within
//! Discord's documented limits (title 256, description 4096, 25 fields of
//! 256/1024, 6000 characters per embed). Mentions are disabled
//! (`allowed_mentions.parse = []`): an alert text cannot ping `@everyone`.
//!
//! A 429 carries `retry_after` (seconds, fractional) in its JSON body and
//! a `Retry-After` header; the body's value is honoured first.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Integration, SendError, SendFuture, check_url, failure, http_client, transport};
use crate::config::Secret;
use crate::consumers::alert::Severity;
use crate::consumers::alert::config::Discord as Config;
use crate::consumers::alert::config::secret;
use crate::consumers::alert::message::{Message, cut, time};

/// Fields shown (the rest are counted in the description).
const MAX_FIELDS: usize = 15;

pub struct Discord {
    client: reqwest::Client,
    url: Secret,
    username: Option<String>,
}

/// Embed colours: red, orange, blue, green.
pub fn colour(m: &Message) -> u32 {
    if !m.is_firing() {
        return 0x002e_cc71;
    }
    match m.severity() {
        Severity::Critical => 0x00e7_4c3c,
        Severity::Warning => 0x00e6_7e22,
        Severity::Info => 0x0034_98db,
    }
}

/// The JSON body Discord receives.
pub fn payload(m: &Message, username: Option<&str>) -> Value {
    let mut fields = Vec::new();
    let mut shown = 0;
    let mut total = 0;
    for (heading, alerts) in m.sections() {
        for a in alerts {
            total += 1;
            if shown == MAX_FIELDS {
                continue;
            }
            shown += 1;
            let mut value = format!("{}\nsince {}", a.summary, time(a.starts_ms));
            if let Some(end) = a.ends_ms {
                let _ = write!(value, ", resolved {}", time(end));
            }
            value.push('\n');
            value.push_str(&m.url(&a.link));
            let tag = heading.split(' ').next().unwrap_or(heading).to_uppercase();
            fields.push(json!({
                "name": cut(&format!("{tag} · {}", a.severity.as_str()), 100),
                "value": cut(&value, 250),
                "inline": false,
            }));
        }
    }
    let mut description = String::new();
    if let Some(since) = m.deferred_since_ms {
        let _ = writeln!(
            description,
            "Held back by the schedule since {}.",
            time(since)
        );
    }
    if total > shown {
        let _ = writeln!(description, "{} more not shown.", total - shown);
    }
    let group: Vec<String> = m
        .group
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = write!(
        description,
        "Route {}, group {{{}}}",
        m.route,
        group.join(", ")
    );
    let timestamp = chrono::DateTime::from_timestamp_millis(m.at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    json!({
        "username": username.unwrap_or("sonde"),
        "allowed_mentions": { "parse": [] },
        "embeds": [{
            "title": cut(&m.title(), 256),
            "description": cut(&description, 1500),
            "color": colour(m),
            "fields": fields,
            "timestamp": timestamp,
        }],
    })
}

/// `retry_after` of a 429 body, if it has one.
fn retry_after(body: &str) -> Option<Duration> {
    let v: Value = serde_json::from_str(body).ok()?;
    let secs = v["retry_after"].as_f64()?;
    (secs.is_finite() && secs >= 0.0).then(|| {
        Duration::from_secs_f64(
            secs.min(crate::consumers::export::sink::MAX_RETRY_AFTER.as_secs_f64()),
        )
    })
}

impl Discord {
    pub fn new(c: &Config, timeout: Duration) -> Result<Self, (String, String)> {
        let url = secret(
            "url",
            c.url.as_ref(),
            c.url_file.as_ref(),
            c.url_env.as_ref(),
        )
        .map_err(|(k, m)| (format!("discord.{k}"), m))?;
        check_url(url.expose()).map_err(|m| ("discord.url".to_owned(), m))?;
        Ok(Self {
            client: http_client(timeout)?,
            url,
            username: c.username.clone(),
        })
    }

    async fn post(&self, m: &Message) -> Result<(), SendError> {
        let response = self
            .client
            .post(self.url.expose())
            .json(&payload(m, self.username.as_deref()))
            .send()
            .await
            .map_err(transport)?;
        match failure(response).await {
            Ok(()) => Ok(()),
            // The body's retry_after (fractional seconds) before the header.
            Err(f) if f.status == 429 => Err(SendError::Retry {
                after: retry_after(&f.body).or(f.retry_after),
                reason: format!("HTTP 429: rate limited: {}", cut(f.body.trim(), 200)),
            }),
            Err(f) => Err(f.classify()),
        }
    }
}

impl Integration for Discord {
    fn send<'a>(&'a self, _uid: &'a str, message: &'a Message) -> SendFuture<'a> {
        Box::pin(self.post(message))
    }

    fn describe(&self) -> String {
        let host = reqwest::Url::parse(self.url.expose())
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!("discord webhook at {host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_from_the_body() {
        assert_eq!(
            retry_after(
                r#"{"message": "You are being rate limited.", "retry_after": 0.5, "global": false}"#
            ),
            Some(Duration::from_millis(500))
        );
        assert_eq!(retry_after("{}"), None);
        assert_eq!(retry_after("<html>"), None);
    }
}
