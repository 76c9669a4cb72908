//! The HTTPS client of the collector's `/api/v1/` (mTLS, JSON).

use std::time::Duration;

use serde_json::Value;

use crate::config::Loaded;

/// Why a request gave no answer we can show.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot build the HTTPS client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    /// The collector answered with an error status and (usually) a JSON
    /// `{"error": ...}` body saying why.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: answer is not JSON: {reason}")]
    Body { url: String, reason: String },
}

/// A client for one collector.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client presenting the configured certificate.
    pub fn new(loaded: &Loaded) -> Result<Self, ApiError> {
        Self::with(loaded.tls.clone(), &loaded.base_url, loaded.config.timeout)
    }

    fn with(tls: rustls::ClientConfig, base: &str, timeout: Duration) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .build()
            .map_err(ApiError::Client)?;
        Ok(Self {
            http,
            base: base.to_owned(),
        })
    }

    /// `GET /api/v1/{path}` with query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        self.request(reqwest::Method::GET, path, query, None).await
    }

    /// `POST /api/v1/{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.request(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    /// `PUT /api/v1/{path}` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.request(reqwest::Method::PUT, path, &[], Some(body))
            .await
    }

    /// `DELETE /api/v1/{path}`.
    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.request(reqwest::Method::DELETE, path, &[], None).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}/api/v1/{path}", self.base);
        let transport = |e: reqwest::Error| ApiError::Transport {
            url: url.clone(),
            reason: sonde_runtime::error::chain(&e),
        };
        let mut request = self.http.request(method, &url).query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = request.send().await.map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if status.is_success() && body.is_empty() {
            // 204 No Content (a deletion).
            return Ok(Value::Null);
        }
        let json: Result<Value, _> = serde_json::from_slice(&body);
        if !status.is_success() {
            let message = json
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(ApiError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        json.map_err(|e| ApiError::Body {
            url,
            reason: e.to_string(),
        })
    }
}
