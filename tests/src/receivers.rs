//! The far ends of alert notifications for the end-to-end tests: a fake
//! of Discord's webhook API (a third-party service: faked, but checking the
//! request shape Discord documents) and a real SMTP server (`aiosmtpd`,
//! `tests/smtp_sink.py`) with STARTTLS and AUTH required.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Proc;

/// One request the fake Discord received.
#[derive(Debug, Clone)]
pub struct Posted {
    pub at: Instant,
    /// What it answered.
    pub status: u16,
    pub body: Value,
    /// Ways the request broke Discord's documented rules.
    pub problems: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    posted: Vec<Posted>,
    /// Answer the next this-many requests 429 with this `retry_after`.
    limit: Option<(usize, f64)>,
}

/// A fake Discord webhook endpoint: `POST /api/webhooks/{id}/{token}`.
#[derive(Debug, Clone)]
pub struct Discord {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
    token: String,
}

/// Checks a webhook body against Discord's documented limits
/// (<https://discord.com/developers/docs/resources/webhook#execute-webhook>,
/// embed limits in the message resource docs).
pub fn discord_problems(headers: &HeaderMap, body: &[u8]) -> (Value, Vec<String>) {
    let mut p = Vec::new();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        p.push(format!("content-type {ct:?}"));
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        p.push("body is not JSON".into());
        return (Value::Null, p);
    };
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    if len(&v["username"]) > 80 {
        p.push("username over 80".into());
    }
    if v["allowed_mentions"]["parse"] != json!([]) {
        p.push("mentions not disabled".into());
    }
    let embeds = v["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.is_empty() && len(&v["content"]) == 0 {
        p.push("neither content nor embeds".into());
    }
    if embeds.len() > 10 {
        p.push("more than 10 embeds".into());
    }
    for e in &embeds {
        let mut total = len(&e["title"]) + len(&e["description"]);
        if len(&e["title"]) > 256 || len(&e["description"]) > 4096 {
            p.push("title or description too long".into());
        }
        if e["color"].as_u64().is_none_or(|c| c > 0xff_ffff) {
            p.push(format!("color {}", e["color"]));
        }
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25 {
            p.push("more than 25 fields".into());
        }
        for f in &fields {
            let (n, v) = (len(&f["name"]), len(&f["value"]));
            if n == 0 || n > 256 || v == 0 || v > 1024 {
                p.push(format!("field sizes {n}/{v}"));
            }
            total += n + v;
        }
        if total > 6000 {
            p.push(format!("embed of {total} characters"));
        }
        if let Some(t) = e["timestamp"].as_str()
            && time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .is_err()
        {
            p.push(format!("timestamp {t:?}"));
        }
    }
    (v, p)
}

async fn execute(
    State(d): State<Discord>,
    UrlPath((_id, token)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (v, problems) = discord_problems(&headers, &body);
    let mut inner = d.inner.lock().unwrap();
    let (status, response) = if token != d.token {
        (
            401,
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"message": "Invalid Webhook Token", "code": 50027})),
            )
                .into_response(),
        )
    } else if !problems.is_empty() {
        (
            400,
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"message": "Invalid Form Body", "code": 50035})),
            )
                .into_response(),
        )
    } else if let Some((n, after)) = inner.limit.filter(|(n, _)| *n > 0) {
        inner.limit = Some((n - 1, after));
        let secs = after.ceil().to_string();
        (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.as_str()), ("x-ratelimit-scope", "shared")],
                axum::Json(json!({"message": "You are being rate limited.", "retry_after": after, "global": false})),
            )
                .into_response(),
        )
    } else {
        (204, StatusCode::NO_CONTENT.into_response())
    };
    inner.posted.push(Posted {
        at: Instant::now(),
        status,
        body: v,
        problems,
    });
    response
}

impl Discord {
    /// Serves on `bind` until the runtime ends.
    pub async fn start(bind: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .expect("bind fake Discord");
        let d = Self {
            inner: Arc::default(),
            addr: listener.local_addr().unwrap(),
            token: "t0ken-secret-part".into(),
        };
        let app = axum::Router::new()
            .route("/api/webhooks/{id}/{token}", axum::routing::post(execute))
            .with_state(d.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        d
    }

    /// The webhook URL (its token is the secret part).
    pub fn url(&self) -> String {
        format!(
            "http://{}/api/webhooks/1234567890/{}",
            self.addr, self.token
        )
    }

    /// The secret part of the URL, to check it never leaks.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Answers the next `n` requests 429 with `retry_after` seconds.
    pub fn rate_limit_next(&self, n: usize, retry_after: f64) {
        self.inner.lock().unwrap().limit = Some((n, retry_after));
    }

    pub fn posted(&self) -> Vec<Posted> {
        self.inner.lock().unwrap().posted.clone()
    }

    /// Titles of the accepted messages, in order.
    pub fn delivered(&self) -> Vec<String> {
        self.posted()
            .iter()
            .filter(|p| p.status == 204)
            .map(|p| {
                p.body["embeds"][0]["title"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }
}

/// The real SMTP server.
pub struct Smtp {
    proc: Option<Proc>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

/// One received mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    pub subject: String,
    pub envelope: Value,
}

impl Mail {
    /// The `text/plain` part, its transfer encoding undone (quoted-printable
    /// or none; lines end in CRLF). Panics, naming the mail, when there is
    /// none or it is encoded otherwise.
    pub fn text(&self) -> String {
        let start = self
            .raw
            .find("Content-Type: text/plain")
            .unwrap_or_else(|| panic!("no text/plain part:\n{}", self.raw));
        let part = &self.raw[start..];
        let (head, body) = part
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("text/plain part without a body:\n{}", self.raw));
        let body = body.split("\r\n--").next().unwrap_or(body);
        let encoding = header(&format!("{head}\r\n\r\n"), "Content-Transfer-Encoding")
            .unwrap_or_else(|| "7bit".to_owned());
        match encoding.to_ascii_lowercase().as_str() {
            "7bit" | "8bit" => body.to_owned(),
            "quoted-printable" => quoted_printable(body),
            other => panic!("text/plain part in {other}:\n{}", self.raw),
        }
    }
}

/// Undoes quoted-printable (RFC 2045 6.7): soft line breaks and `=XX`.
fn quoted_printable(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Smtp {
    /// Starts `tests/smtp_sink.py` on `addr` with `cert`/`key`, requiring
    /// login `user`/`password`; mails go to `dir`.
    pub async fn start(
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        user: &str,
        password: &str,
        dir: &Path,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_sink.py");
        let args = vec![
            script.display().to_string(),
            addr.ip().to_string(),
            addr.port().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
            user.to_owned(),
            password.to_owned(),
            dir.display().to_string(),
        ];
        let mut s = Self {
            proc: None,
            addr,
            dir: dir.to_owned(),
            args,
            log: dir.with_extension("log"),
        };
        s.resume().await;
        s
    }

    /// Starts the server on `ip` (a free port) with a certificate of the
    /// world's CA for that address, requiring `user`/`password`; mails go
    /// to `DIR/mail`, and the password is written to `DIR/smtp.password`
    /// (0600) for the collector's `password-file`.
    pub async fn start_in(world: &crate::World, ip: [u8; 4], user: &str, password: &str) -> Self {
        let addr = SocketAddr::from((ip, crate::free_port()));
        let cert = world.write_cert(
            "smtp",
            &world
                .pki
                .ca()
                .issue_server(&[addr.ip().to_string()], 30)
                .expect("SMTP server certificate"),
        );
        crate::write_secret(&world.dir().join("smtp.password"), password);
        Self::start(
            addr,
            &cert.cert,
            &cert.key,
            user,
            password,
            &world.dir().join("mail"),
        )
        .await
    }

    /// Stops the server (connections are refused until [`Self::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }

    /// Starts it again.
    pub async fn resume(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let p = Proc::spawn(Path::new("python3"), &args, &[], self.log.clone());
        p.wait_log(&["ready"], Duration::from_secs(30)).await;
        self.proc = Some(p);
    }

    /// Mails received so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let raw = std::fs::read_to_string(&p).unwrap();
                let envelope = std::fs::read_to_string(p.with_extension("json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
                Mail {
                    subject: header(&raw, "Subject").unwrap_or_default(),
                    raw,
                    envelope,
                }
            })
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A header's value, continuation lines unfolded.
pub fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw
        .split("\r\n\r\n")
        .next()?
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}
