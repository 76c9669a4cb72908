//! The SMS receivers against fakes of their gateways (third-party services:
//! faked on loopback, checking the request shape their APIs document),
//! and watching the watcher: the collector's dead-man's switch pings and
//! its no-data alert, with the real collector and agent binaries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sonde_collector::config::Secret;
use sonde_collector::consumers::alert::Severity;
use sonde_collector::consumers::alert::config::{SmsWebhook, Twilio as TwilioConfig};
use sonde_collector::consumers::alert::message::{AlertView, Message};
use sonde_collector::consumers::alert::receiver::{
    Integration, SendError, twilio::Twilio, webhook::Webhook,
};
use sonde_proto::Role;
use sonde_tests::receivers::Discord;
use sonde_tests::{World, eventually};

/// One request a fake gateway saw: method, path, headers, body.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

#[derive(Debug, Clone, Default)]
struct Gateway {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Statuses to answer, in order (then 201).
    answers: Arc<Mutex<Vec<u16>>>,
}

async fn record(
    State(g): State<Gateway>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    g.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
    });
    let status = {
        let mut a = g.answers.lock().unwrap();
        if a.is_empty() { 201 } else { a.remove(0) }
    };
    let body = serde_json::json!({"sid": "SM0123", "status": "queued", "message": "x"});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn gateway() -> (Gateway, String) {
    let g = Gateway::default();
    let app = axum::Router::new().fallback(record).with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (g, base)
}

fn message() -> Message {
    let alert = |summary: &str| AlertView {
        fingerprint: "0123456789abcdef".into(),
        labels: [("tenant".to_owned(), "acme".to_owned())].into(),
        severity: Severity::Critical,
        summary: summary.into(),
        link: "/api/v1/outages".into(),
        starts_ms: 1_800_000_000_000,
        ends_ms: None,
        held_times: 0,
    };
    Message {
        route: "r".into(),
        receiver: "sms".into(),
        tenant: Some("acme".into()),
        group: [("tenant".to_owned(), "acme".to_owned())].into(),
        firing: vec![
            alert("prefix 10.82.0.0/24 is down"),
            alert(&"long text ".repeat(40)),
        ],
        flapping: vec![],
        resolved: vec![],
        resolved_while_deferred: vec![],
        at_ms: 1_800_000_000_000,
        deferred_since_ms: None,
        external_url: None,
    }
}

/// `application/x-www-form-urlencoded` → pairs.
fn form(body: &str) -> BTreeMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{body}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn twilio_gets_its_documented_form_post() {
    let (g, base) = gateway().await;
    let config = TwilioConfig {
        base_url: base,
        account_sid: "AC0123456789abcdef".into(),
        auth_token: Some(Secret::new("s3cret-token")),
        auth_token_file: None,
        auth_token_env: None,
        from: "+15550100".into(),
        to: vec!["+15550101".into()],
        max_length: 70,
    };
    let t = Twilio::new(&config, "+15550101", Duration::from_secs(5)).unwrap();
    t.send("u1", &message()).await.unwrap();
    let seen = g.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    );
    assert_eq!(
        r.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    // Basic auth: account SID and token.
    let auth = r.headers["authorization"].strip_prefix("Basic ").unwrap();
    assert_eq!(
        base64_check::decode(auth),
        "AC0123456789abcdef:s3cret-token"
    );
    let f = form(&r.body);
    assert_eq!(
        (f["To"].as_str(), f["From"].as_str()),
        ("+15550101", "+15550100")
    );
    assert!(
        f["Body"].starts_with("[FIRING:2] acme: prefix 10.82.0.0/24 is down"),
        "{}",
        f["Body"]
    );
    assert_eq!(f["Body"].chars().count(), 70, "cut to max-length");
    assert!(f["Body"].ends_with('…'));

    // Throttled: retried later; refused content: not retried.
    g.answers.lock().unwrap().extend([429, 400]);
    assert!(matches!(
        t.send("u2", &message()).await,
        Err(SendError::Retry { .. })
    ));
    assert!(matches!(
        t.send("u3", &message()).await,
        Err(SendError::Rejected { .. })
    ));
    // The token never appears in what is reported.
    assert!(!t.describe().contains("s3cret"));
}

#[tokio::test]
async fn sms_webhook_fills_its_templates() {
    let (g, base) = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    sonde_tests::write_secret(&auth, "Bearer k3y-from-file\n");
    let config = SmsWebhook {
        method: "post".into(),
        url: Some(Secret::new(format!("{base}/v1/send?to={{to_url}}"))),
        url_file: None,
        url_env: None,
        headers: [("Content-Type".to_owned(), "application/json".to_owned())].into(),
        header_files: [("Authorization".to_owned(), auth)].into(),
        body: r#"{"to": {to_json}, "text": {message_json}}"#.into(),
        to: vec!["+33 6 00".into()],
        max_length: 160,
    };
    let w = Webhook::new(&config, "+33 6 00", Duration::from_secs(5)).unwrap();
    w.send("u1", &message()).await.unwrap();
    let seen = g.seen.lock().unwrap().clone();
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/send?to=%2B33%206%2000");
    assert_eq!(r.headers["authorization"], "Bearer k3y-from-file");
    assert_eq!(r.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON body");
    assert_eq!(v["to"], "+33 6 00");
    assert!(v["text"].as_str().unwrap().starts_with("[FIRING:2]"));
    assert!(v["text"].as_str().unwrap().chars().count() <= 160);
    // A header file that is missing is a config error naming the key.
    let mut bad = config.clone();
    bad.header_files = [("Authorization".to_owned(), dir.path().join("nope"))].into();
    let err = Webhook::new(&bad, "+1", Duration::from_secs(5))
        .err()
        .unwrap();
    assert_eq!(err.0, "sms-webhook.header-files");
}

/// Minimal base64 decoding for the Basic credentials (test only).
mod base64_check {
    pub fn decode(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes().filter(|c| *c != b'=') {
            let v = u32::try_from(A.iter().position(|a| *a == c).expect("base64")).unwrap();
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push(u8::try_from(bits >> n).unwrap());
                bits &= (1 << n) - 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}

/// A Healthchecks-style endpoint: records the paths pinged.
async fn healthchecks() -> (Arc<Mutex<Vec<String>>>, String) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/ping/{*rest}",
        axum::routing::get(move |UrlPath(rest): UrlPath<String>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(rest);
                "OK"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ping/5bf66975", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadman_switch_and_no_data_alert() {
    let world = World::new();
    let (pings, hc) = healthchecks().await;
    let discord = Discord::start("127.0.0.1:0".parse().unwrap()).await;
    world.collector_config(&format!(
        "[access]\noperator-tenants = [\"noc\"]\n\
         [alerting.deadman]\nurl = \"{hc}\"\ninterval = \"1s\"\n\
         [alerting.no-data]\nafter = \"3s\"\n\
         [[alerting.route]]\nreceiver = \"noc\"\ngroup-wait = \"1s\"\ngroup-interval = \"1s\"\n\
         [[alerting.receiver]]\nname = \"noc\"\n[alerting.receiver.discord]\nurl = \"{}\"\n",
        discord.url()
    ));
    let _collector = world.start_collector(&[]).await;
    // Started: /start, then plain pings while nothing is overdue.
    eventually("/start and a ping", Duration::from_secs(10), || async {
        let p = pings.lock().unwrap().clone();
        (p.first().map(String::as_str) == Some("5bf66975/start") && p.len() >= 2).then_some(())
    })
    .await;
    assert_eq!(pings.lock().unwrap()[1], "5bf66975");
    // No agent: after 3 s of nothing, /fail and a no-data alert.
    eventually("/fail", Duration::from_secs(15), || async {
        pings
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.ends_with("/fail"))
            .then_some(())
    })
    .await;
    let title = eventually("no-data notification", Duration::from_secs(15), || async {
        discord.delivered().first().cloned()
    })
    .await;
    assert!(
        title.starts_with("[FIRING:1] the collector has received nothing from any agent"),
        "{title}"
    );
    let noc = world.cert("noc", Role::Viewer, "ops");
    let v = world.api(Some(&noc)).ok("/api/v1/alerts").await;
    assert_eq!(v["alerts"][0]["rule"], "no-data");
    assert_eq!(v["alerts"][0]["status"], "firing");
    // acme's viewer does not see the collector's own alert.
    let acme = world.cert("acme", Role::Viewer, "eve");
    let v = world.api(Some(&acme)).ok("/api/v1/alerts").await;
    assert_eq!(v["alerts"], serde_json::json!([]));
    // An agent speaks: healthy again, resolved.
    let cert = world.cert("acme", Role::Agent, "edge-1");
    world.agent_config("edge-1", &cert, "[heartbeat]\ninterval = \"500ms\"\n");
    let _agent = world.start_agent("edge-1", &[]);
    let title = eventually("no-data resolved", Duration::from_secs(20), || async {
        discord.delivered().get(1).cloned()
    })
    .await;
    assert_eq!(
        title, "[RESOLVED:1] the collector receives results again",
        "{title}"
    );
    let fails = pings
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.ends_with("/fail"))
        .count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pings.lock().unwrap().clone();
    assert_eq!(
        p.iter().filter(|p| p.ends_with("/fail")).count(),
        fails,
        "no /fail once data flows"
    );
    assert_eq!(p.last().unwrap(), "5bf66975");
}
