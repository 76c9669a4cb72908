//! Heartbeat checks end to end, as a cron job uses them: the real
//! collector binary, its ping listener over HTTPS, real `curl`, alerts to
//! a fake of Discord's webhook API; then a `kill -9` and a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sonde_proto::Role;
use sonde_tests::receivers::Discord;
use sonde_tests::{Api, World, eventually, free_port};

/// Longer than group-wait + group-interval: what has not arrived by then
/// is not coming.
const QUIET: Duration = Duration::from_secs(4);
const WAIT: Duration = Duration::from_secs(15);

/// `curl -sS` as a cron job runs it; the HTTP status and the body.
fn curl(ca: &Path, url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs (installed by scripts/test.sh)");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_owned())
}

/// `n` pings of `url` by one curl, in parallel; their statuses.
fn burst(ca: &Path, url: &str, n: usize) -> Vec<u16> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "--parallel",
        "--parallel-max",
        "50",
        "--cacert",
    ])
    .arg(ca)
    .args(["-w", "%{http_code}\n"]);
    for _ in 0..n {
        cmd.args(["-o", "/dev/null", url]);
    }
    let out = cmd.output().expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().expect("status"))
        .collect()
}

async fn state(api: &Api, id: i64) -> Value {
    api.ok(&format!("/api/v1/checks/{id}")).await
}

async fn wait_state(api: &Api, id: i64, want: &str) -> Instant {
    eventually(&format!("check {id} {want}"), WAIT, || async {
        (state(api, id).await["state"] == want).then(Instant::now)
    })
    .await
}

async fn create(api: &Api, body: Value) -> (i64, String, String) {
    let (status, v) = api
        .send(reqwest::Method::POST, "/api/v1/checks", Some(&body), &[])
        .await;
    assert_eq!(status, 201, "{v}");
    let id = v["check"]["id"].as_i64().expect("id");
    let token = v["token"].as_str().expect("token shown once").to_owned();
    let url = v["ping_url"].as_str().expect("ping_url").to_owned();
    assert!(url.ends_with(&format!("/ping/{token}")), "{url}");
    (id, token, url)
}

/// The check events of `name` that change whether it is up (a first
/// ping's `check-up` from new, pauses and resumes left out).
fn check_events(events: &[Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["detail"]["check"] == name)
        .filter(|e| e["detail"]["was"] != "new" && e["detail"]["was"] != "paused")
        .filter(|e| e["kind"] != "check-paused" && e["kind"] != "check-resumed")
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

struct Rig {
    world: World,
    ping_port: u16,
    ca: std::path::PathBuf,
    admin: Api,
    discord: Discord,
}

async fn rig() -> Rig {
    let world = World::new();
    let discord = Discord::start("127.0.0.1:0".parse().unwrap()).await;
    let ping_port = free_port();
    world.collector_config_with(
        &format!("ping-listen = \"127.0.0.1:{ping_port}\""),
        &format!(
            "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.9.0.0/24\"]\n\
         [[tenant]]\nname = \"globex\"\nprefixes = [\"10.8.0.0/24\"]\n\
         [alerting.delivery]\nretry-initial = \"300ms\"\nretry-max = \"1s\"\n\
         [[alerting.route]]\ntenant = \"acme\"\nreceiver = \"ops\"\ngroup-by = [\"check\"]\n\
         group-wait = \"200ms\"\ngroup-interval = \"1s\"\nrepeat-interval = \"1h\"\n\
         [[alerting.receiver]]\nname = \"ops\"\n[alerting.receiver.discord]\nurl = \"{}\"\n",
            discord.url()
        ),
    );
    let admin = world.api(Some(&world.cert("acme", Role::Admin, "ada")));
    let ca = world.pki.dir().join("ca.pem");
    Rig {
        world,
        ping_port,
        ca,
        admin,
        discord,
    }
}

#[tokio::test]
async fn a_check_pinged_with_curl_goes_late_down_and_up_and_alerts_once_each_way() {
    let r = rig().await;
    let _collector = r.world.start_collector(&[]).await;
    let (id, token, url) = create(
        &r.admin,
        json!({ "name": "nightly backup", "period": "2s", "grace": "1s" }),
    )
    .await;
    assert_eq!(
        url,
        format!("https://localhost:{}/ping/{token}", r.ping_port)
    );
    assert_eq!(state(&r.admin, id).await["state"], "new");
    // The token is shown once: never in a read.
    assert!(!state(&r.admin, id).await.to_string().contains(&token));
    assert_eq!(
        curl(&r.ca, &url, &["-A", "cron/backup"]),
        (200, "OK".into())
    );
    let pinged = Instant::now();
    assert_eq!(state(&r.admin, id).await["state"], "up");
    // Silent: late after the period, down after period + grace (+1 s).
    wait_state(&r.admin, id, "late").await;
    let down = wait_state(&r.admin, id, "down").await;
    let took = down - pinged;
    assert!(
        took <= Duration::from_secs(4) + Duration::from_millis(500),
        "down {took:?} after the last ping (period 2 s + grace 1 s)"
    );
    eventually("one check-down notification", WAIT, || async {
        (!r.discord.delivered().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let delivered = r.discord.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(delivered[0].contains("nightly backup"), "{delivered:?}");
    let events = r.admin.events().await;
    assert_eq!(check_events(&events, "nightly backup"), ["check-down"]);
    // Pinged again: up, one resolution. Then paused, so that it does not
    // go down again while the test counts.
    assert_eq!(curl(&r.ca, &url, &[]), (200, "OK".into()));
    assert_eq!(state(&r.admin, id).await["state"], "up");
    let (status, v) = r
        .admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/checks/{id}/pause"),
            Some(&json!({})),
            &[],
        )
        .await;
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");
    eventually("one resolved notification", WAIT, || async {
        (r.discord.delivered().len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        r.discord.delivered().len(),
        2,
        "{:?}",
        r.discord.delivered()
    );
    let events = r.admin.events().await;
    assert_eq!(
        check_events(&events, "nightly backup"),
        ["check-down", "check-up"]
    );
    // Its last 24 hours: nothing before it was made, then a down in the
    // last minutes (a minute down at any moment is down), so less than
    // 100 % up.
    let a = r
        .admin
        .ok(&format!("/api/v1/checks/{id}/availability"))
        .await;
    let minutes: Vec<&str> = a["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(minutes.len(), 1440, "{a}");
    assert_eq!(minutes[0], "none");
    assert!(minutes[1435..].contains(&"down"), "{:?}", &minutes[1430..]);
    let day = a["availability"]["24h"].as_f64().expect("a share");
    assert!((0.0..100.0).contains(&day), "{a}");
    // The ping log: time, kind, source, user agent.
    let pings = r.admin.ok(&format!("/api/v1/checks/{id}/pings")).await;
    let p = &pings["pings"];
    assert_eq!(p.as_array().map(Vec::len), Some(2), "{pings}");
    assert_eq!(p[1]["user_agent"], "cron/backup");
    assert_eq!(p[1]["source"], "127.0.0.1");
    assert_eq!(p[1]["kind"], "success");
}

#[tokio::test]
async fn failures_durations_bad_input_and_limits() {
    let r = rig().await;
    let _collector = r.world.start_collector(&[]).await;
    let base = format!("https://localhost:{}", r.ping_port);
    let (id_a, _, url_a) = create(&r.admin, json!({ "name": "a", "period": "1h" })).await;
    let (id_b, _, url_b) = create(&r.admin, json!({ "name": "b", "period": "1h" })).await;
    // `/fail` and `/1`: failed at once.
    assert_eq!(curl(&r.ca, &format!("{url_a}/fail"), &[]).0, 200);
    assert_eq!(curl(&r.ca, &format!("{url_b}/1"), &[]).0, 200);
    assert_eq!(state(&r.admin, id_a).await["state"], "down");
    assert_eq!(state(&r.admin, id_b).await["state"], "down");
    let events = r.admin.events().await;
    assert_eq!(check_events(&events, "a"), ["check-failed"]);
    assert_eq!(check_events(&events, "b"), ["check-failed"]);
    let failed = events.iter().find(|e| e["detail"]["check"] == "b").unwrap();
    assert_eq!(failed["detail"]["exit_status"], 1);
    // `/start`, then success: the run's duration.
    assert_eq!(curl(&r.ca, &format!("{url_a}/start"), &[]).0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(curl(&r.ca, &format!("{url_a}/0"), &[]).0, 200);
    let s = state(&r.admin, id_a).await;
    assert_eq!(s["state"], "up");
    let ms = s["last_duration_ms"].as_i64().expect("a duration");
    assert!((300..5000).contains(&ms), "{ms} ms");
    // POST with a body: kept; HEAD works too.
    assert_eq!(
        curl(
            &r.ca,
            &format!("{url_a}/log"),
            &["--data-binary", "rows: 42"]
        )
        .0,
        200
    );
    assert_eq!(curl(&r.ca, &url_a, &["-I"]).0, 200);
    let pings = r.admin.ok(&format!("/api/v1/checks/{id_a}/pings")).await;
    assert_eq!(pings["pings"][1]["body"], "rows: 42");
    assert_eq!(pings["pings"][1]["method"], "POST");
    let count = |v: &Value| v["pings"].as_array().map_or(0, Vec::len);
    let before = count(&pings);
    // Unknown 404, malformed 400, too large 413 and nothing stored.
    let unknown = format!("{base}/ping/{}", uuid_like());
    assert_eq!(curl(&r.ca, &unknown, &[]), (404, "not found".into()));
    assert_eq!(curl(&r.ca, &format!("{base}/ping/not-a-token"), &[]).0, 400);
    assert_eq!(curl(&r.ca, &format!("{url_a}/256"), &[]).0, 400);
    let big = r.world.dir().join("big.txt");
    std::fs::write(&big, vec![b'x'; 101 * 1024]).unwrap();
    let (code, _) = curl(
        &r.ca,
        &url_a,
        &["--data-binary", &format!("@{}", big.display())],
    );
    assert_eq!(code, 413);
    let pings = r.admin.ok(&format!("/api/v1/checks/{id_a}/pings")).await;
    assert_eq!(count(&pings), before, "a refused body is not recorded");
    // 25 at once to a fresh check (one curl, 25 transfers in parallel):
    // 20 (the burst) pass, the rest are 429 (one more per second the burst
    // took, at 1/s); the other checks are not held back.
    let (id_c, _, url_c) = create(&r.admin, json!({ "name": "c", "period": "1h" })).await;
    let started = Instant::now();
    let codes = burst(&r.ca, &url_c, 25);
    let refilled = usize::try_from(started.elapsed().as_secs()).unwrap();
    let ok = codes.iter().filter(|code| **code == 200).count();
    let limited = codes.iter().filter(|code| **code == 429).count();
    assert!(
        (20..=20 + refilled).contains(&ok) && ok + limited == 25,
        "{codes:?} in {:?}",
        started.elapsed()
    );
    assert!(limited >= 4, "{codes:?}");
    assert_eq!(curl(&r.ca, &url_b, &[]).0, 200);
    assert_eq!(
        count(&r.admin.ok(&format!("/api/v1/checks/{id_c}/pings")).await),
        ok,
        "exactly the pings answered 200 are recorded"
    );
    // Rotated: the old URL is unknown at once, the new one works.
    let (status, v) = r
        .admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/checks/{id_b}/rotate"),
            Some(&json!({})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(curl(&r.ca, &url_b, &[]).0, 404);
    assert_eq!(curl(&r.ca, v["ping_url"].as_str().unwrap(), &[]).0, 200);
    assert_ping_metrics(&r.world, limited).await;
    // Bad definitions: 400 naming the field.
    for (body, field) in [
        (json!({ "name": "x", "cron": "61 * * * *" }), "cron"),
        (
            json!({ "name": "x", "cron": "* * * * *", "timezone": "Mars/Base" }),
            "timezone",
        ),
        (json!({ "name": "x", "grace": "0s" }), "grace"),
    ] {
        let (status, v) = r
            .admin
            .send(reqwest::Method::POST, "/api/v1/checks", Some(&body), &[])
            .await;
        assert_eq!(status, 400, "{body}: {v}");
        let e = v["error"].as_str().unwrap_or("");
        assert!(e.contains(&format!("{field}:")), "{e} should name {field}");
    }
}

/// What /metrics says of the pings of `failures_durations_bad_input_and_limits`
/// (and no tenant or check names).
async fn assert_ping_metrics(world: &World, limited: usize) {
    let text = world.collector_metrics().await;
    let metric = |name: &str| {
        sonde_tests::prom_value(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let refused = "sonde_collector_check_pings_refused_total";
    for (name, want) in [
        (
            format!("{refused}{{reason=\"rate-limited\"}}"),
            f64::from(u32::try_from(limited).unwrap()),
        ),
        (format!("{refused}{{reason=\"too-large\"}}"), 1.0),
        (format!("{refused}{{reason=\"malformed\"}}"), 2.0),
        (format!("{refused}{{reason=\"unknown\"}}"), 2.0),
        (
            "sonde_collector_check_pings_total{kind=\"fail\"}".into(),
            2.0,
        ),
        ("sonde_collector_checks{state=\"up\"}".into(), 3.0),
    ] {
        let got = metric(&name);
        assert!((got - want).abs() < 0.5, "{name} = {got}, want {want}");
    }
    assert!(!text.contains("acme"));
}

/// A token's form with fresh randomness (never one a check has).
fn uuid_like() -> String {
    let n: u128 = rand_u128();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn rand_u128() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    t ^ (u128::from(std::process::id()) << 64)
}

#[tokio::test]
async fn after_kill_9_states_pings_and_deadlines_are_intact_and_down_comes_once() {
    let r = rig().await;
    let mut collector = r.world.start_collector(&[]).await;
    let (late, _, url_late) = create(
        &r.admin,
        json!({ "name": "due-while-down", "period": "2s", "grace": "1s" }),
    )
    .await;
    let (kept, _, url_kept) = create(&r.admin, json!({ "name": "kept", "period": "1h" })).await;
    let (paused, _, _) = create(&r.admin, json!({ "name": "paused", "period": "2s" })).await;
    let (status, _) = r
        .admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/checks/{paused}/pause"),
            Some(&json!({})),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(curl(&r.ca, &url_late, &[]).0, 200);
    assert_eq!(curl(&r.ca, &url_kept, &["--data-binary", "before"]).0, 200);
    collector.kill9();
    // Due (2 s + 1 s) while the collector is down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _collector = r.world.start_collector(&[]).await;
    wait_state(&r.admin, late, "down").await;
    assert_eq!(state(&r.admin, kept).await["state"], "up");
    assert_eq!(state(&r.admin, paused).await["state"], "paused");
    let pings = r.admin.ok(&format!("/api/v1/checks/{kept}/pings")).await;
    assert_eq!(pings["pings"][0]["body"], "before");
    tokio::time::sleep(QUIET).await;
    let events = r.admin.events().await;
    assert_eq!(check_events(&events, "due-while-down"), ["check-down"]);
    assert_eq!(
        r.discord.delivered().len(),
        1,
        "{:?}",
        r.discord.delivered()
    );
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn sondectl_manages_checks_and_prints_the_ping_url_once() {
    let r = rig().await;
    let _collector = r.world.start_collector(&[]).await;
    let admin =
        sonde_tests::ctl_config(&r.world, "admin", &r.world.cert("acme", Role::Admin, "ada"));
    let viewer = sonde_tests::ctl_config(
        &r.world,
        "viewer",
        &r.world.cert("acme", Role::Viewer, "vic"),
    );
    let o = sonde_tests::sondectl(
        &admin,
        &[
            "checks", "create", "db dump", "--period", "1h", "--grace", "10m",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", out(&o));
    let text = out(&o);
    let url = text
        .lines()
        .find(|l| l.starts_with("https://"))
        .unwrap_or_else(|| panic!("no ping URL in\n{text}"))
        .to_owned();
    assert_eq!(curl(&r.ca, &url, &["-A", "sondectl-test"]).0, 200);
    let list = sonde_tests::sondectl(&viewer, &["checks", "list"]).await;
    let listed = out(&list);
    let line = listed
        .lines()
        .find(|l| l.contains("db dump"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains(" up "), "{line}");
    assert!(
        !listed.contains(url.rsplit('/').next().unwrap()),
        "token listed"
    );
    let id = line.split_whitespace().next().unwrap().to_owned();
    let pings = out(&sonde_tests::sondectl(&viewer, &["checks", "pings", &id]).await);
    assert!(
        pings.contains("success") && pings.contains("sondectl-test"),
        "{pings}"
    );
    // A viewer may not change it; the error says why.
    let o = sonde_tests::sondectl(&viewer, &["checks", "pause", &id]).await;
    assert!(!o.status.success());
    assert!(out(&o).contains("admin"), "{}", out(&o));
    let o = sonde_tests::sondectl(&admin, &["checks", "pause", &id]).await;
    assert!(out(&o).contains("paused"), "{}", out(&o));
    let o = sonde_tests::sondectl(&admin, &["checks", "resume", &id]).await;
    assert!(out(&o).contains(" new "), "{}", out(&o));
    let o = sonde_tests::sondectl(&admin, &["checks", "rotate", &id]).await;
    let rotated = out(&o);
    let new_url = rotated
        .lines()
        .find(|l| l.starts_with("https://"))
        .unwrap_or_else(|| panic!("{rotated}"))
        .to_owned();
    assert_eq!(curl(&r.ca, &url, &[]).0, 404);
    assert_eq!(curl(&r.ca, &new_url, &[]).0, 200);
    let o = sonde_tests::sondectl(&admin, &["checks", "delete", &id]).await;
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(curl(&r.ca, &new_url, &[]).0, 404);
    let listed = out(&sonde_tests::sondectl(&viewer, &["checks", "list"]).await);
    assert!(!listed.contains("db dump"), "{listed}");
}

/// `last_heartbeat_seq` of acme's agent `a1` as the admin sees it.
async fn seq(api: &Api) -> i64 {
    // 404 until its first session is recorded.
    let (_, v) = api.get("/api/v1/agents/a1").await.expect("API request");
    v["agent"]["last_heartbeat_seq"].as_i64().unwrap_or(0)
}

#[tokio::test]
async fn agent_settings_reach_the_agent_and_liveness_at_once_and_survive_a_restart() {
    let r = rig().await;
    let mut collector = r.world.start_collector(&[]).await;
    let cert = r.world.cert("acme", Role::Agent, "a1");
    r.world
        .agent_config("a1", &cert, "[heartbeat]\ninterval = \"1s\"\n");
    let mut agent = r.world.start_agent("a1", &[]);
    eventually("a1 heartbeats", WAIT, || async {
        (seq(&r.admin).await >= 1).then_some(())
    })
    .await;
    let path = "/api/v1/agents/a1/settings";
    let v = r.admin.ok(path).await;
    assert_eq!(v["effective"]["heartbeat_interval"], "1s", "{v}");
    assert_eq!(v["effective"]["grace"], "3s", "{v}");
    // Viewers read, admins change, another tenant sees nothing.
    let viewer = r
        .world
        .api(Some(&r.world.cert("acme", Role::Viewer, "vic")));
    let globex = r
        .world
        .api(Some(&r.world.cert("globex", Role::Admin, "gus")));
    let body = json!({ "heartbeat_interval": "200ms", "grace": "2s" });
    let put = |api: &Api, body: Value| {
        let api = api.clone();
        async move { api.send(reqwest::Method::PUT, path, Some(&body), &[]).await }
    };
    assert_eq!(viewer.ok(path).await["name"], "a1");
    assert_eq!(put(&viewer, body.clone()).await.0, 403);
    assert_eq!(put(&globex, body.clone()).await.0, 404);
    assert_eq!(globex.get(path).await.unwrap().0, 404);
    let bad = put(
        &r.admin,
        json!({ "heartbeat_interval": "2s", "grace": "1s" }),
    )
    .await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(
        bad.1["error"].as_str().unwrap().contains("grace:"),
        "{}",
        bad.1
    );
    let bad = put(&r.admin, json!({ "schedule": "nope" })).await;
    assert!(
        bad.1["error"].as_str().unwrap().contains("schedule:"),
        "{}",
        bad.1
    );
    // The new interval reaches the connected agent within a second.
    let (status, v) = put(&r.admin, body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["effective"]["heartbeat_interval"], "200ms", "{v}");
    let before = seq(&r.admin).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let beats = seq(&r.admin).await - before;
    assert!(
        beats >= 4,
        "{beats} heartbeats in 1.5 s after the change (1 s before it)"
    );
    // Liveness applies a shorter grace at once: missing 500 ms after the
    // last heartbeat, not 2 s (nor the 3 s of before).
    let (status, v) = put(
        &r.admin,
        json!({ "heartbeat_interval": "200ms", "grace": "500ms" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    agent.kill9();
    let killed = Instant::now();
    eventually("a1 missing", WAIT, || async {
        (r.admin.ok("/api/v1/agents/a1").await["agent"]["state"] == "missing").then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "missing {took:?} after the kill (grace 500 ms)"
    );
    // Its availability shows the minute it went missing.
    let a = r.admin.ok("/api/v1/agents/a1/availability").await;
    let last: Vec<&str> = a["minutes"].as_array().unwrap()[1437..]
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        last.contains(&"down") && a["minutes"][0] == "none",
        "{last:?}"
    );
    // Kept across a restart; DELETE goes back to the config.
    collector.terminate();
    let _collector = r.world.start_collector(&[]).await;
    let v = r.admin.ok(path).await;
    assert_eq!(v["settings"]["grace"], "500ms", "{v}");
    let (status, v) = r.admin.send(reqwest::Method::DELETE, path, None, &[]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["settings"], Value::Null, "{v}");
    assert_eq!(
        v["effective"]["grace"], "600ms",
        "3 x the 200 ms it last used: {v}"
    );
    sondectl_agent_settings(&r, path).await;
}

/// `sondectl agent settings`: what is not given is kept; viewers read.
async fn sondectl_agent_settings(r: &Rig, path: &str) {
    let admin =
        sonde_tests::ctl_config(&r.world, "admin", &r.world.cert("acme", Role::Admin, "ada"));
    let viewer = sonde_tests::ctl_config(
        &r.world,
        "viewer",
        &r.world.cert("acme", Role::Viewer, "vic"),
    );
    let o = sonde_tests::sondectl(&admin, &["agent", "settings", "a1", "--grace", "5s"]).await;
    assert!(o.status.success(), "{}", out(&o));
    let o = sonde_tests::sondectl(&admin, &["agent", "settings", "a1", "--interval", "1s"]).await;
    let text = out(&o);
    let line = |t: &str, k: &str| {
        t.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line(&text, "grace").contains("5s"), "{text}");
    assert!(line(&text, "heartbeat interval").contains("1s"), "{text}");
    let o = sonde_tests::sondectl(&viewer, &["agent", "settings", "a1", "--grace", "9s"]).await;
    assert!(
        !o.status.success() && out(&o).contains("admin"),
        "{}",
        out(&o)
    );
    let text = out(&sonde_tests::sondectl(&viewer, &["agent", "settings", "a1"]).await);
    assert!(line(&text, "grace").contains("5s"), "{text}");
    let o = sonde_tests::sondectl(&admin, &["agent", "settings", "a1", "--reset"]).await;
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(r.admin.ok(path).await["settings"], Value::Null);
}
