//! The seam between the exporter and a time-series database: a [`Sink`]
//! takes a body of line protocol and says whether it was stored, should be
//! sent again, or was refused for its content. The exporter's batching and
//! retry policy live above it; everything specific to one database (here
//! InfluxDB, in `influx.rs`) lives below it, so the client could be
//! replaced without touching the rest.

use std::future::Future;
use std::time::{Duration, SystemTime};

/// Why a write did not succeed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Worth sending again unchanged: connection errors, timeouts, 5xx,
    /// 429, and configuration-shaped refusals (401/403/404) that an
    /// operator fixes without the data being at fault. `after` is the
    /// server's `Retry-After`, when it gave one.
    #[error("{reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The server refused the content (400, 413, 422, other 4xx); sending
    /// the same lines again cannot succeed. `message` is the server's.
    #[error("HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
}

/// A database that accepts line protocol.
pub trait Sink: Send + Sync + 'static {
    /// Writes `body` (lines ending in `\n`, nanosecond timestamps).
    fn write(&self, body: String) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Whether the database is up and ready for writes.
    fn ready(&self) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Where it writes to, for logs (never containing secrets).
    fn describe(&self) -> String;
}

/// Classifies an HTTP status of a failed write.
pub fn classify(status: u16, message: String, retry_after: Option<Duration>) -> WriteError {
    match status {
        // Throttled or unavailable: wait and send the same again.
        429 | 500..=599 => WriteError::Retry {
            reason: format!("HTTP {status}: {message}"),
            after: retry_after,
        },
        // Wrong token, missing permission or bucket: the data is fine,
        // the configuration is not. Keep it and keep trying (loudly).
        401 | 403 | 404 => WriteError::Retry {
            reason: format!("HTTP {status} (check influxdb url, org, bucket and token): {message}"),
            after: None,
        },
        _ => WriteError::Rejected { status, message },
    }
}

/// Longest server-requested wait honoured; a larger `Retry-After` is
/// treated as this (a typo on the server must not stall export for days).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110
/// §10.2.3), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let retry = |s| matches!(classify(s, String::new(), None), WriteError::Retry { .. });
        assert!(
            [429, 500, 502, 503, 504, 401, 403, 404]
                .into_iter()
                .all(retry)
        );
        assert!([400, 413, 422, 405].into_iter().all(|s| !retry(s)));
        assert_eq!(
            classify(503, "busy".into(), Some(Duration::from_secs(3))),
            WriteError::Retry {
                reason: "HTTP 503: busy".into(),
                after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sat, 21 Nov 2026 12:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sat, 21 Nov 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past: retry now. Absurdly far: capped.
        assert_eq!(
            parse_retry_after("Sat, 21 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
