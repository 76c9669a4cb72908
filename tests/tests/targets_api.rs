//! The HTTP side of the web UI with the real binaries: managed targets
//! (`POST/PUT/DELETE /api/v1/targets`) reaching a running agent through
//! config updates, who may change what, the cross-site change guard, the
//! live stream and replay, and newest-first events.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use sonde_proto::Role;
use sonde_tests::{World, eventually, no_public_ip};

/// The agent's last "ICMP target set applied targets=N".
fn applied(log: &str) -> Option<u32> {
    log.lines()
        .rev()
        .find_map(|l| l.split("ICMP target set applied targets=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_targets_reach_the_agent_and_are_guarded() {
    let world = World::new();
    world.collector_config(
        "[[tenant]]\nname = \"acme\"\nprefixes = [\"127.0.0.0/24\"]\n\
         [[tenant]]\nname = \"globex\"\nprefixes = [\"127.0.1.0/24\"]\n\
         [[tenant]]\nname = \"initech\"\nprefixes = [\"127.16.0.0/16\"]\nmax-series = 1000\n",
    );
    let mut collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "a1");
    let own = "[[ping]]\ntargets = [\"127.0.0.1\"]\ninterval = \"1s\"\n";
    world.agent_config("a1", &cert, &format!("{own}{}", no_public_ip(own)));
    let mut agent = world.start_agent("a1", &[]);
    let admin = world.api(Some(&world.cert("acme", Role::Admin, "ann")));
    let viewer = world.api(Some(&world.cert("acme", Role::Viewer, "vic")));
    let other = world.api(Some(&world.cert("globex", Role::Admin, "gus")));
    eventually("agent a1 listed", Duration::from_secs(20), || async {
        admin.agent("acme", "a1").await
    })
    .await;
    let body = json!({"name": "lo five", "target": "127.0.0.5", "kind": "ping", "interval": "1s", "agents": ["a1"]});

    // Viewers read, admins change.
    let (status, v) = viewer
        .send(Method::POST, "/api/v1/targets", Some(&body), &[])
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("admin role"), "{v}");
    let (status, created) = admin
        .send(Method::POST, "/api/v1/targets", Some(&body), &[])
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["author"], "sonde://acme/admin/ann");
    assert_eq!(
        (created["interval"].as_str(), created["timeout"].as_str()),
        (Some("1s"), Some("1s"))
    );
    let id = created["id"].as_i64().unwrap();

    // The running agent gets it without a restart: the address is measured.
    eventually("127.0.0.5 measured", Duration::from_secs(20), || async {
        let v = viewer.ok("/api/v1/targets?prefix=127.0.0.5/32").await;
        (v["targets"][0]["state"] == "up").then_some(())
    })
    .await;
    assert_eq!(
        applied(&agent.log_text()),
        Some(2),
        "own target + managed one"
    );

    refusals(&admin, &viewer, &other, &body, id).await;
    // A quota: a /16 is more series than initech may have (nothing is
    // probed: the definition is refused).
    let initech = world.api(Some(&world.cert("initech", Role::Admin, "ian")));
    let wide = json!({"name": "wide", "target": "127.16.0.0/16", "kind": "ping"});
    let (status, v) = initech
        .send(Method::POST, "/api/v1/targets", Some(&wide), &[])
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("max-series: 65534 addresses on 1 agents make 65534 series"),
        "{v}"
    );
    let path = format!("/api/v1/targets/{id}");

    // Disable: the agent drops it at once; the same origin is welcome.
    let mut off = body.clone();
    off["enabled"] = json!(false);
    let origin = admin.base().to_owned();
    let (status, v) = admin
        .send(Method::PUT, &path, Some(&off), &[("Origin", &origin)])
        .await;
    assert_eq!((status, v["enabled"].as_bool()), (200, Some(false)), "{v}");
    eventually(
        "agent drops the disabled target",
        Duration::from_secs(10),
        || async { (applied(&agent.log_text()) == Some(1)).then_some(()) },
    )
    .await;
    assert_eq!(admin.send(Method::DELETE, &path, None, &[]).await.0, 204);
    assert_eq!(admin.send(Method::GET, &path, None, &[]).await.0, 404);

    live_stream(&viewer).await;
    replay(&viewer).await;

    // Newest events first: a second agent registers after a1.
    let cert2 = world.cert("acme", Role::Agent, "a2");
    world.agent_config("a2", &cert2, no_public_ip(""));
    let mut a2 = world.start_agent("a2", &[]);
    eventually("agent a2 listed", Duration::from_secs(20), || async {
        admin.agent("acme", "a2").await
    })
    .await;
    let v = admin.ok("/api/v1/events?before=0&limit=2").await;
    assert_eq!(v["events"][0]["agent"], "a2", "{v}");
    let ids: Vec<i64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.len() == 2 && ids[0] > ids[1], "{v}");
    assert_eq!(v["next_before"].as_i64(), Some(ids[1]));

    collector.terminate();
    agent.terminate();
    a2.terminate();
}

/// The live stream: a full first frame of the caller's prefixes.
async fn live_stream(viewer: &sonde_tests::Api) {
    let (text, frame) = viewer.first_live_frame().await;
    assert!(text.starts_with("event: frame"), "{text}");
    assert_eq!(
        (frame["full"].as_bool(), &frame["prefixes"]),
        (Some(true), &json!(["127.0.0.0/24"]))
    );
    let cells = &frame["changed"][0];
    assert_eq!(cells["s"].as_array().unwrap().len(), 256);
    assert_eq!(cells["s"][1], 1, "127.0.0.1 up: {cells}");
    assert_eq!(cells["s"][9], 0, "127.0.0.9 not monitored");
}

/// Replay names its mistakes; a valid minute gives the same prefixes.
async fn replay(viewer: &sonde_tests::Api) {
    refused(
        viewer,
        "/api/v1/replay",
        400,
        "invalid query parameter \"at\": required: the minute to show, Unix milliseconds",
    )
    .await;
    let (status, _) = viewer.get("/api/v1/replay?at=1000").await.unwrap();
    assert_eq!(status, 400);
    // What the request sent comes back quoted, never run into the
    // message's own words (an unquoted name ending in `2001:db8` spelled
    // `2001:db8:` with the colon after it: the api_query fuzzer's find).
    refused(
        viewer,
        "/api/v1/replay?2001:db8",
        400,
        "invalid query parameter \"2001:db8\": unknown parameter; allowed: at",
    )
    .await;
    refused(
        viewer,
        "/api/v1/no-such:thing",
        404,
        "not found: \"/api/v1/no-such:thing\"",
    )
    .await;
    let now = sonde_tests::now_ms();
    let v = viewer.ok(&format!("/api/v1/replay?at={now}")).await;
    assert_eq!(v["prefixes"][0]["prefix"], "127.0.0.0/24");
    assert_eq!(v["at_ms"].as_i64().unwrap(), now / 60_000 * 60_000);
}

/// GET `path` is answered with `status` and exactly this error message.
async fn refused(api: &sonde_tests::Api, path: &str, status: u16, error: &str) {
    let (got, v) = api.get(path).await.unwrap();
    assert_eq!((got, v["error"].as_str()), (status, Some(error)), "{path}");
}

/// Numeric spellings and host names of other tenants' addresses are
/// refused with the grant error.
async fn grants_hold(admin: &sonde_tests::Api, other: &sonde_tests::Api) {
    // Numeric spellings of globex's addresses are those addresses.
    for spelling in [
        "2130706697",
        "0177.0.1.011",
        "127.000.001.011",
        "0x7f000109",
        "127.265",
    ] {
        let theirs = json!({"name": "x", "target": spelling, "kind": "ping"});
        let (status, v) = admin
            .send(Method::POST, "/api/v1/targets", Some(&theirs), &[])
            .await;
        assert_eq!(status, 400, "{spelling}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("127.0.1.9 is not inside a prefix granted to tenant acme"),
            "{spelling}: {v}"
        );
    }
    // A host name is checked on what the collector resolves it to
    // (`localhost`, from /etc/hosts: 127.0.0.1, acme's).
    let named = json!({"name": "lh", "target": "localhost", "kind": "ping"});
    let (status, v) = other
        .send(Method::POST, "/api/v1/targets", Some(&named), &[])
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains(
            "localhost (resolves to 127.0.0.1) is not inside a prefix granted to tenant globex"
        ),
        "{v}"
    );
}

/// Duplicates, bad bodies, other tenants, cross-site requests: each named.
async fn refusals(
    admin: &sonde_tests::Api,
    viewer: &sonde_tests::Api,
    other: &sonde_tests::Api,
    body: &serde_json::Value,
    id: i64,
) {
    // Clear refusals.
    let (status, v) = admin
        .send(Method::POST, "/api/v1/targets", Some(body), &[])
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            409,
            Some("tenant acme already has a target named \"lo five\"")
        )
    );
    let bad = json!({"name": "x", "target": "127.0.0.6", "kind": "ping", "port": 80});
    let (status, v) = admin
        .send(Method::POST, "/api/v1/targets", Some(&bad), &[])
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            400,
            Some("invalid request body: port: ping targets have no port")
        )
    );
    let theirs = json!({"name": "x", "target": "127.0.1.9", "kind": "ping"});
    let (status, v) = admin
        .send(Method::POST, "/api/v1/targets", Some(&theirs), &[])
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("127.0.1.9 is not inside a prefix granted to tenant acme"),
        "{v}"
    );
    grants_hold(admin, other).await;
    let (status, v) = admin
        .send(
            Method::POST,
            "/api/v1/targets",
            Some(&json!({"name": "x", "target": "127.0.0.6", "kind": "ping", "tenant": "globex"})),
            &[],
        )
        .await;
    assert_eq!(status, 403, "{v}");

    // Another tenant's definition does not exist for globex.
    let path = format!("/api/v1/targets/{id}");
    assert_eq!(other.send(Method::GET, &path, None, &[]).await.0, 404);
    assert_eq!(other.send(Method::DELETE, &path, None, &[]).await.0, 404);
    let defs = other.ok("/api/v1/targets/definitions").await;
    assert_eq!(defs["definitions"], json!([]), "{defs}");
    let defs = viewer.ok("/api/v1/targets/definitions").await;
    assert_eq!(
        (
            defs["definitions"][0]["id"].as_i64(),
            defs["may_edit"].as_bool()
        ),
        (Some(id), Some(false))
    );

    // Cross-site requests are refused before anything else.
    let (status, v) = admin
        .send(Method::PUT, &path, None, &[("Content-Type", "text/plain")])
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("application/json"),
        "{v}"
    );
    let (status, v) = admin
        .send(
            Method::DELETE,
            &path,
            None,
            &[("Origin", "https://evil.example")],
        )
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("cross-origin"), "{v}");
    // This collector's origin followed by another: refused, not judged by
    // the first alone.
    let own = admin.base().to_owned();
    let (status, v) = admin
        .send(
            Method::DELETE,
            &path,
            None,
            &[("Origin", &own), ("Origin", "https://evil.example")],
        )
        .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("more than one Origin header"),
        "{v}"
    );
}
