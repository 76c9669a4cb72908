//! InfluxDB v2 behind the [`Sink`] seam: everything InfluxDB-specific is
//! in this file.
//!
//! The `influxdb2` crate (0.5.2) provides the client we configure and its
//! readiness check (`ready()`, `GET /ready`; `health()` cannot parse the
//! plain-text `/health` of compatible servers such as VictoriaMetrics). Its
//! write methods return only the status and body of a failed request, not
//! the headers, so the server's `Retry-After` would be lost; writes are
//! therefore sent here with the crate's own HTTP stack (reqwest 0.11, the
//! same `ClientBuilder` settings: timeouts, CA) to the same endpoint it
//! uses, `POST /api/v2/write?org=…&bucket=…&precision=ns` with
//! `Authorization: Token …`. The body is our own line protocol
//! (`line.rs`), already batched.
//!
//! The token is sent only in that header and never logged.

use std::time::SystemTime;

use reqwest_influx::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::sink::{Sink, WriteError, classify, parse_retry_after};
use crate::config::Influx;
use sonde_runtime::files::{self, Kind};

/// Longest part of a server's error body kept for the log.
const MAX_ERROR_BODY: usize = 2048;

/// Why the InfluxDB client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    #[error("influxdb.token-file: {0}")]
    Token(String),
    #[error("influxdb.ca {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("influxdb client for {url}: {reason}")]
    Client { url: String, reason: String },
}

/// Writes line protocol to one InfluxDB v2 bucket.
pub struct InfluxSink {
    client: influxdb2::Client,
    http: reqwest_influx::Client,
    write_url: reqwest_influx::Url,
    auth: Option<HeaderValue>,
    target: String,
}

impl std::fmt::Debug for InfluxSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl InfluxSink {
    /// A client for the configured server (no request is made).
    pub fn new(config: &Influx) -> Result<Self, InfluxError> {
        let token = config.token().map_err(InfluxError::Token)?;
        let client_error = |reason: String| InfluxError::Client {
            url: config.url.clone(),
            reason,
        };
        let builder = || -> Result<reqwest_influx::ClientBuilder, InfluxError> {
            let mut b = reqwest_influx::ClientBuilder::new()
                .timeout(config.timeout)
                .connect_timeout(config.connect_timeout)
                .user_agent(concat!("sonde-collector/", env!("CARGO_PKG_VERSION")));
            if let Some(ca) = &config.ca {
                let ca_error = |reason: String| InfluxError::Ca {
                    path: ca.display().to_string(),
                    reason,
                };
                let pem = files::read(ca, Kind::Shared, files::PEM_LIMIT)
                    .map_err(|e| ca_error(e.to_string()))?;
                let cert = reqwest_influx::Certificate::from_pem(&pem)
                    .map_err(|e| ca_error(e.to_string()))?;
                b = b.add_root_certificate(cert);
            }
            Ok(b)
        };
        let mut write_url =
            reqwest_influx::Url::parse(&config.url).map_err(|e| client_error(e.to_string()))?;
        write_url.set_path("/api/v2/write");
        write_url
            .query_pairs_mut()
            .append_pair("org", &config.org)
            .append_pair("bucket", &config.bucket)
            .append_pair("precision", "ns");
        // `with_builder` panics on an unparsable URL; it was parsed above.
        let client = influxdb2::ClientBuilder::with_builder(
            builder()?,
            config.url.clone(),
            config.org.clone(),
            token.as_ref().map_or("", |t| t.expose()),
        )
        .build()
        .map_err(|e| client_error(e.to_string()))?;
        let http = builder()?
            .build()
            .map_err(|e| client_error(e.to_string()))?;
        let auth = token
            .map(|t| {
                let mut v =
                    HeaderValue::from_str(&format!("Token {}", t.expose())).map_err(|_| {
                        InfluxError::Token(
                            "token has characters an HTTP header cannot carry".into(),
                        )
                    })?;
                v.set_sensitive(true);
                Ok::<_, InfluxError>(v)
            })
            .transpose()?;
        Ok(Self {
            client,
            http,
            write_url,
            auth,
            target: format!("{} org {} bucket {}", config.url, config.org, config.bucket),
        })
    }
}

fn describe_transport(e: &reqwest_influx::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display names the URL (no credentials: the token is a
    // header) and the cause chain says why.
    sonde_runtime::error::with_sources(format!("{what}: {e}"), e)
}

impl Sink for InfluxSink {
    async fn write(&self, body: String) -> Result<(), WriteError> {
        let mut req = self
            .http
            .post(self.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let resp = req.send().await.map_err(|e| WriteError::Retry {
            reason: describe_transport(&e),
            after: None,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut text = resp.text().await.unwrap_or_default();
        if text.len() > MAX_ERROR_BODY {
            let mut cut = MAX_ERROR_BODY;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Err(classify(status.as_u16(), text.trim().to_owned(), after))
    }

    async fn ready(&self) -> Result<(), WriteError> {
        match self.client.ready().await {
            Ok(_) => Ok(()),
            Err(e) => Err(WriteError::Retry {
                reason: format!("not ready: {e}"),
                after: None,
            }),
        }
    }

    fn describe(&self) -> String {
        self.target.clone()
    }
}
