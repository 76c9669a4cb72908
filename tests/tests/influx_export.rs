//! InfluxDB export against a real server: VictoriaMetrics from Debian,
//! which speaks the InfluxDB v2 write API. A real collector process, an
//! agent in-process (real session, spool and batcher) fed known results.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sonde_collector::store::Store;
use sonde_proto::v1::{PingResult, PingStatus, Record, record};
use sonde_tests::agent::Agent;
use sonde_tests::victoria::{Series, Victoria};
use sonde_tests::{World, eventually, free_port, prom_value};

const AGENT: &str =
    "[heartbeat]\ninterval = \"200ms\"\n[batch]\nmax-records = 100\nmax-delay = \"100ms\"\n";

fn collector_tables(url: &str) -> String {
    format!(
        "[influxdb]\nurl = \"{url}\"\norg = \"sonde\"\nbucket = \"sonde\"\n\
         batch-delay = \"200ms\"\nretry-initial = \"200ms\"\nretry-max = \"2s\"\ntimeout = \"2s\"\n"
    )
}

/// Result `i`: target 10.60.(i/250 % 2).(i % 250 + 1) from a /23 range,
/// sent at `t0 + i` ms, RTT `i` µs; every 10th lost with a hostile error
/// text (quotes, backslash, line break, separators).
fn result(i: usize, t0: i64) -> Record {
    let n = i % 500;
    let lost = i.is_multiple_of(10);
    Record {
        kind: Some(record::Kind::Ping(PingResult {
            target: "10.60.0.0/23".into(),
            address: format!("10.60.{}.{}", n / 250, n % 250 + 1),
            sent_unix_nanos: t0 + i64::try_from(i).unwrap() * 1_000_000,
            rtt_nanos: if lost {
                0
            } else {
                u64::try_from(i).unwrap() * 1000
            },
            status: if lost {
                PingStatus::Timeout
            } else {
                PingStatus::Ok
            } as i32,
            error: if lost {
                "no \"reply\", a\\b\nc=d e".into()
            } else {
                String::new()
            },
            reply_ttl: 64,
        })),
    }
}

fn samples(series: &[Series]) -> usize {
    series.iter().map(|s| s.values.len()).sum()
}

/// `n` distinct (target, time) points, none twice.
fn assert_each_point_once(all: &[Series], n: usize) {
    let mut per_point: HashMap<(String, i64), usize> = HashMap::new();
    for s in all {
        for ts in &s.timestamps {
            *per_point
                .entry((s.label("target").to_owned(), *ts))
                .or_default() += 1;
        }
    }
    assert_eq!(per_point.len(), n, "distinct points");
    assert!(per_point.values().all(|c| *c == 1), "a point arrived twice");
}

/// Results in the collector's ingest log (what it has acknowledged).
fn logged_results(world: &World) -> u64 {
    let store = Store::open_dir(&world.dir().join("collector-state")).unwrap();
    sonde_collector::log::SqliteLog::new(store)
        .batches_after(0, 1_000_000)
        .unwrap()
        .iter()
        .map(|b| u64::from(b.results))
        .sum()
}

/// The first 500 results in VictoriaMetrics: tags, fields, timestamps,
/// heartbeats, and no invalid line.
async fn check_schema(vm: &Victoria, t0: i64) {
    let lost = eventually("500 ping points", Duration::from_secs(30), || async {
        let s = vm.export(r#"ping_lost{agent="edge-1"}"#).await;
        (samples(&s) == 500).then_some(s)
    })
    .await;
    // Tags: exactly tenant, agent, target, prefix.
    for s in &lost {
        let keys: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["__name__", "agent", "prefix", "target", "tenant"])
        );
        assert_eq!((s.label("tenant"), s.label("agent")), ("acme", "edge-1"));
        let want = if s.label("target").starts_with("10.60.0.") {
            "10.60.0.0/24"
        } else {
            "10.60.1.0/24"
        };
        assert_eq!(s.label("prefix"), want);
    }
    assert_eq!(lost.len(), 500, "one series per address of the range");
    let lost_total: f64 = lost.iter().flat_map(|s| s.values.iter()).sum();
    assert!(
        (lost_total - 50.0).abs() < f64::EPSILON,
        "lost = {lost_total}"
    );
    // RTT fields only for answered probes, in ms, at the send time (ms).
    let rtt = vm.export(r#"ping_rtt_ms{agent="edge-1"}"#).await;
    assert_eq!(samples(&rtt), 450);
    for s in &rtt {
        for (v, ts) in s.values.iter().zip(&s.timestamps) {
            let i = f64::from(u32::try_from(ts - t0 / 1_000_000).unwrap());
            assert!((v - i / 1000.0).abs() < 1e-9, "rtt {v} at i = {i}");
        }
    }
    eventually("heartbeat points", Duration::from_secs(10), || async {
        let hb = vm
            .export(r#"heartbeat_seq{tenant="acme",agent="edge-1"}"#)
            .await;
        (samples(&hb) > 0).then_some(())
    })
    .await;
    // Every line we wrote was valid (VictoriaMetrics says 204 regardless).
    assert!(
        vm.metric(r#"vm_rows_invalid_total{type="influx"}"#)
            .await
            .abs()
            < f64::EPSILON
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_schema_and_exactly_once_across_a_30s_outage() {
    let world = World::new();
    let mut vm = Victoria::start(&world.dir().join("vm")).await;
    world.collector_config(&collector_tables(&vm.url()));
    let collector = world.start_collector(&[]).await;
    let agent = Agent::start(&world, "edge-1", AGENT);
    let t0 = sonde_runtime::clock::unix_nanos() - 60_000_000_000;
    agent.send((0..500).map(|i| result(i, t0))).await;

    check_schema(&vm, t0).await;

    // The server goes away for 30 s: agents are still acknowledged, the
    // export waits, and afterwards every point is there exactly once.
    vm.stop();
    agent.send((500..1000).map(|i| result(i, t0))).await;
    eventually(
        "1000 results acknowledged into the log",
        Duration::from_secs(30),
        || async { (logged_results(&world) == 1000).then_some(()) },
    )
    .await;
    collector
        .wait_log(
            &["InfluxDB write failed", "will retry"],
            Duration::from_secs(20),
        )
        .await;
    // The lag is visible in /metrics and in the API while it lasts.
    let text = world.collector_metrics().await;
    let metric = |name: &str| prom_value(&text, name).unwrap_or_else(|| panic!("no {name}"));
    assert!(
        metric("sonde_collector_export_lag_results") >= 500.0,
        "{text}"
    );
    assert!((metric("sonde_collector_export_failing") - 1.0).abs() < f64::EPSILON);
    // The one driver's view of the same: export behind, nothing panicked.
    assert!(
        metric(r#"sonde_collector_consumer_lag_batches{consumer="export"}"#) >= 1.0,
        "{text}"
    );
    assert!(metric(r#"sonde_collector_consumer_lag_seconds{consumer="export"}"#) > 0.0);
    for consumer in ["analysis", "facts", "export"] {
        let restarts = metric(&format!(
            "sonde_collector_consumer_restarts_total{{consumer=\"{consumer}\"}}"
        ));
        assert!(restarts.abs() < f64::EPSILON, "{consumer}: {text}");
    }
    assert!(
        !text.contains("acme") && !text.contains("edge-1"),
        "tenant data in /metrics"
    );
    let viewer = world.api(Some(&world.cert("acme", sonde_proto::Role::Viewer, "v")));
    let status = viewer.ok("/api/v1/status").await;
    assert!(
        status["export"]["lag"]["results"].as_u64().unwrap() >= 500,
        "{status}"
    );
    assert_eq!(status["export"]["failing"], true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    vm.restart().await;
    let all = eventually(
        "1000 ping points after the outage",
        Duration::from_secs(60),
        || async {
            let s = vm.export(r#"ping_lost{agent="edge-1"}"#).await;
            (samples(&s) >= 1000).then_some(s)
        },
    )
    .await;
    assert_each_point_once(&all, 1000);
    collector
        .wait_log(&["export recovered"], Duration::from_secs(5))
        .await;
    eventually("export lag back to 0", Duration::from_secs(10), || async {
        (world
            .collector_metric("sonde_collector_export_lag_results")
            .await
            < 1.0)
            .then_some(())
    })
    .await;
    agent.stop().await;
}

/// The server stopped twice while the exporter is busy writing, each time
/// for 5 s: every point arrives exactly once. Stopped with SIGTERM, which
/// VictoriaMetrics answers by finishing the requests in flight and writing
/// what it holds: after SIGKILL it loses the last seconds it had already
/// acknowledged (its own durability, not sonde's: the collector cannot know
/// about points a server confirmed and then forgot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_twice_mid_export_gets_every_point_once() {
    let world = World::new();
    let mut vm = Victoria::start(&world.dir().join("vm")).await;
    world.collector_config(&collector_tables(&vm.url()));
    let _collector = world.start_collector(&[]).await;
    let agent = Arc::new(Agent::start(&world, "edge-2", AGENT));
    let t0 = sonde_runtime::clock::unix_nanos() - 600_000_000_000;
    let feeder = tokio::spawn({
        let agent = agent.clone();
        async move {
            for k in 0..40 {
                agent
                    .send((k * 100..(k + 1) * 100).map(|i| result(i, t0)))
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        vm.stop();
        tokio::time::sleep(Duration::from_secs(5)).await;
        vm.restart().await;
    }
    feeder.await.unwrap();
    let all = eventually("4000 ping points", Duration::from_secs(60), || async {
        let s = vm.export(r#"ping_lost{agent="edge-2"}"#).await;
        (samples(&s) >= 4000).then_some(s)
    })
    .await;
    assert_each_point_once(&all, 4000);
    Arc::try_unwrap(agent)
        .ok()
        .expect("feeder done")
        .stop()
        .await;
}

/// An InfluxDB-shaped refusal in front of the real server: bodies holding
/// `refuse-me` get InfluxDB's 400 "partial write" answer, everything else
/// is passed through to VictoriaMetrics.
async fn refusing_proxy(upstream: String, refused: Arc<AtomicUsize>) -> u16 {
    use axum::body::Bytes;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (client, upstream, refused) = (client.clone(), upstream.clone(), refused.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body: Bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            if let Some(line) = text.lines().find(|l| l.contains("refuse-me")) {
                refused.fetch_add(1, Ordering::SeqCst);
                let msg = format!(
                    r#"{{"code":"invalid","message":"partial write: unable to parse '{}': invalid field format"}}"#,
                    line.replace('"', "'")
                );
                return (StatusCode::BAD_REQUEST, msg).into_response();
            }
            let url = format!("{upstream}{}", parts.uri.path_and_query().map_or("", |p| p.as_str()));
            let r = client
                .request(parts.method, url)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            (status, r.text().await.unwrap()).into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_line_is_logged_counted_and_not_retried() {
    let world = World::new();
    let vm = Victoria::start(&world.dir().join("vm")).await;
    let refused = Arc::new(AtomicUsize::new(0));
    let port = refusing_proxy(vm.url(), refused.clone()).await;
    world.collector_config(&collector_tables(&format!("http://127.0.0.1:{port}")));
    let collector = world.start_collector(&[]).await;
    let agent = Agent::start(&world, "edge-2", AGENT);
    let t0 = sonde_runtime::clock::unix_nanos() - 60_000_000_000;
    let mut records: Vec<Record> = (1..40).map(|i| result(i, t0)).collect();
    records.insert(
        17,
        Record {
            kind: Some(record::Kind::Ping(PingResult {
                target: "refuse-me.example".into(),
                sent_unix_nanos: t0,
                status: PingStatus::ResolveError as i32,
                error: "no such host".into(),
                ..PingResult::default()
            })),
        },
    );
    agent.send(records).await;
    eventually("39 ping points", Duration::from_secs(30), || async {
        (samples(&vm.export(r#"ping_lost{agent="edge-2"}"#).await) == 39).then_some(())
    })
    .await;
    let line = collector
        .wait_log(
            &["InfluxDB refused a line", "refuse-me.example"],
            Duration::from_secs(10),
        )
        .await;
    assert!(
        line.contains("partial write"),
        "server message logged: {line}"
    );
    // Isolated in a few requests, then left alone.
    let after = refused.load(Ordering::SeqCst);
    assert!((1..=8).contains(&after), "{after} refused requests");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        refused.load(Ordering::SeqCst),
        after,
        "the refused line was retried"
    );
    assert!(
        vm.export(r#"{target="refuse-me.example"}"#)
            .await
            .is_empty()
    );
    agent.stop().await;
}
