//! Receivers: where notifications go. A `[[alerting.receiver]]` has one
//! or more integrations — Discord, SMTP mail, Twilio-compatible SMS, a
//! templated SMS webhook — and each integration (each SMS recipient, so a
//! retry never texts the others twice) is delivered and retried on its
//! own by `notify.rs`, through the [`Integration`] seam.
//!
//! HTTP errors are classified as in the exporter: 429 and 5xx are retried
//! (after the server's `Retry-After`), 401/403/404 too (the configuration
//! is wrong, not the message: loudly, until given up), other 4xx are
//! refused for good. Error texts never contain the URL (a webhook URL is a
//! secret).

pub mod discord;
pub mod email;
pub mod twilio;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use super::config::Receiver;
use super::message::Message;
use crate::consumers::export::sink::parse_retry_after;

/// Why a delivery failed, for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again (after `after`, when the far side said).
    #[error("{reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Refused for its content: trying again cannot help.
    #[error("{reason}")]
    Rejected { reason: String },
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

/// One way of delivering a notification.
pub trait Integration: Send + Sync + 'static {
    /// Delivers the notification whose globally unique id is `uid` (the
    /// same for every retry: mail uses it in the Message-ID).
    fn send<'a>(&'a self, uid: &'a str, message: &'a Message) -> SendFuture<'a>;
    /// What it is, for logs (no secrets).
    fn describe(&self) -> String;
}

/// The integration names of a receiver: `discord`, `email`, and one
/// `twilio:NUMBER` / `sms-webhook:NUMBER` per SMS recipient.
pub fn names(r: &Receiver) -> Vec<String> {
    let mut out = Vec::new();
    if r.discord.is_some() {
        out.push("discord".to_owned());
    }
    if r.email.is_some() {
        out.push("email".to_owned());
    }
    if let Some(t) = &r.twilio {
        out.extend(t.to.iter().map(|n| format!("twilio:{n}")));
    }
    if let Some(w) = &r.sms_webhook {
        out.extend(w.to.iter().map(|n| format!("sms-webhook:{n}")));
    }
    out
}

/// Builds the integration `name` of `r`; the error is (key, message).
pub fn build(
    r: &Receiver,
    name: &str,
    timeout: Duration,
) -> Result<Box<dyn Integration>, (String, String)> {
    let (kind, to) = name.split_once(':').unwrap_or((name, ""));
    let missing = || {
        (
            kind.to_owned(),
            format!("receiver {} has no {kind}", r.name),
        )
    };
    Ok(match kind {
        "discord" => Box::new(discord::Discord::new(
            r.discord.as_ref().ok_or_else(missing)?,
            timeout,
        )?),
        "email" => Box::new(email::Email::new(
            r.email.as_ref().ok_or_else(missing)?,
            timeout,
        )?),
        "twilio" => Box::new(twilio::Twilio::new(
            r.twilio.as_ref().ok_or_else(missing)?,
            to,
            timeout,
        )?),
        "sms-webhook" => Box::new(webhook::Webhook::new(
            r.sms_webhook.as_ref().ok_or_else(missing)?,
            to,
            timeout,
        )?),
        _ => return Err(("name".to_owned(), format!("unknown integration {name:?}"))),
    })
}

/// Checks a receiver by building each of its integrations.
pub fn validate(r: &Receiver) -> Result<(), (String, String)> {
    let names = names(r);
    if names.is_empty() {
        return Err((
            "name".to_owned(),
            format!(
                "receiver {:?} has no integration: add [alerting.receiver.discord], .email, .twilio or .sms-webhook (with recipients)",
                r.name
            ),
        ));
    }
    for n in names {
        build(r, &n, Duration::from_secs(10))?;
    }
    Ok(())
}

/// Checks that `u` is an http(s) URL with a host.
pub fn check_url(u: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".to_owned());
    }
    Ok(url)
}

/// An HTTP client for receivers: public roots, no redirects (a webhook
/// that redirects is misconfigured, and a redirect could leak the body).
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, (String, String)> {
    let tls = sonde_runtime::tls::public_client_config()
        .map_err(|e| ("tls".to_owned(), e.to_string()))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("sonde-collector/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ("http".to_owned(), format!("HTTP client: {e}")))
}

/// A reqwest error in one line, its URL left out.
pub(crate) fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let head = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    sonde_runtime::error::with_sources(head, &e)
}

/// Longest part of an error body kept.
const MAX_ERROR_BODY: usize = 512;

/// An answer other than 2xx.
pub(crate) struct Failure {
    pub status: u16,
    /// The `Retry-After` header.
    pub retry_after: Option<Duration>,
    /// The start of the body.
    pub body: String,
}

impl Failure {
    pub fn classify(self) -> SendError {
        classify(self.status, &self.body, self.retry_after)
    }
}

/// Reads a response: `Ok` for 2xx, else what the failure said.
pub(crate) async fn failure(response: reqwest::Response) -> Result<(), Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = response.text().await.unwrap_or_default();
    Err(Failure {
        status: status.as_u16(),
        retry_after,
        body: body.chars().take(MAX_ERROR_BODY).collect(),
    })
}

/// Reads a response: `Ok` for 2xx, else the classified error.
pub(crate) async fn check_response(response: reqwest::Response) -> Result<(), SendError> {
    failure(response).await.map_err(Failure::classify)
}

/// Classifies an HTTP status.
pub(crate) fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> SendError {
    let reason = format!("HTTP {status}: {}", body.trim());
    match status {
        429 | 500..=599 => SendError::Retry {
            reason,
            after: retry_after,
        },
        401 | 403 | 404 => SendError::Retry {
            reason: format!("{reason} (check the receiver's URL and credentials)"),
            after: None,
        },
        _ => SendError::Rejected { reason },
    }
}

/// A reqwest failure to send (no answer): always worth retrying.
pub(crate) fn transport(e: reqwest::Error) -> SendError {
    SendError::Retry {
        reason: error_text(e),
        after: None,
    }
}
