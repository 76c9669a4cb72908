//! The query API end to end with tenant scoping: two tenants share one
//! prefix and each owns one more; acme trusts globex's agents, globex
//! trusts nobody, initech shares the prefix and trusts nobody; a real
//! collector, in-process agents (real sessions) feeding known results.

use std::collections::BTreeSet;
use std::time::Duration;

use sonde_proto::Role;
use sonde_proto::v1::{PingResult, PingStatus, Record, record};
use sonde_tests::agent::Agent;
use sonde_tests::{World, ctl_config, eventually, grpc_channel, sondectl};

const AGENT: &str =
    "[heartbeat]\ninterval = \"200ms\"\n[batch]\nmax-records = 50\nmax-delay = \"100ms\"\n";

const GRANTS: &str = "[analysis]\ncheckpoint = \"200ms\"\n\
    [[tenant]]\nname = \"acme\"\nprefixes = [\"10.70.1.0/24\", \"10.70.2.0/24\"]\ntrust = [\"globex\"]\n\
    [[tenant]]\nname = \"globex\"\nprefixes = [\"10.70.1.0/24\", \"10.70.3.0/24\"]\n\
    [[tenant]]\nname = \"initech\"\nprefixes = [\"10.70.1.0/24\"]\n";

/// `rounds` answered pings (2 ms) per address, one a second, ending now.
fn pings(addresses: &[&str], rounds: i64) -> Vec<Record> {
    results(addresses, rounds, &|_| false)
}

fn addresses(body: &serde_json::Value) -> BTreeSet<String> {
    body["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["address"].as_str().unwrap().to_owned())
        .collect()
}

fn prefix_names(body: &serde_json::Value) -> Vec<String> {
    body["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prefix"].as_str().unwrap().to_owned())
        .collect()
}

/// The same views through `sondectl`: the grid, targets, prefixes, and a
/// refusal in one line.
async fn check_sondectl(world: &World) {
    let ctl = ctl_config(world, "acme", &world.cert("acme", Role::Viewer, "va"));
    let out = sondectl(&ctl, &["prefix", "10.70.1.0/24", "--color", "never"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("10.70.1.0/24: 2 monitored\n"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .nth(2)
            .unwrap()
            .starts_with(".0    ··········██"),
        "{stdout}"
    );
    let out = sondectl(&ctl, &["prefix", "10.70.4.0/24"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("prefix 10.70.4.0/24 is not granted to your tenant"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let out = sondectl(&ctl, &["targets"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("10.70.1.6")
            && stdout.contains("10.70.3.5")
            && !stdout.contains("10.70.3.6"),
        "{stdout}"
    );
    let out = sondectl(&ctl, &["prefix"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("10.70.2.0/24") && stdout.contains("10.70.3.0/24"),
        "{stdout}"
    );
}

/// The shared grid: 256 cells, two monitored, each with its timeline.
async fn check_grid(acme: &sonde_tests::Api) {
    let grid = acme.ok("/api/v1/prefixes/10.70.1.0/24").await;
    let cells = grid["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 256);
    let monitored: Vec<&serde_json::Value> =
        cells.iter().filter(|c| c["monitored"] == true).collect();
    assert_eq!(monitored.len(), 2);
    assert_eq!(monitored[0]["address"], "10.70.1.5");
    assert_eq!(monitored[0]["state"], "up");
    let timeline = &monitored[0]["timeline"];
    assert_eq!(timeline["probes"].as_array().unwrap().len(), 60);
    // The newest minute with data is the pings' (the current minute may
    // have none yet when the query crosses a minute boundary).
    let means = timeline["mean_ms"].as_array().unwrap();
    assert_eq!(
        means.iter().rev().find(|m| !m.is_null()),
        Some(&serde_json::json!(2.0)),
        "{means:?}"
    );
    assert!(
        means.iter().rev().take(2).any(|m| !m.is_null()),
        "the pings' minute is the current one or the one before: {means:?}"
    );
    assert_eq!(
        timeline["mean_ms"][0],
        serde_json::Value::Null,
        "no data is null, not 0"
    );
    assert_eq!(
        (
            monitored[0]["series"].as_u64(),
            monitored[1]["series"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(cells[7]["monitored"], false);
    // The encoded form works the same.
    assert_eq!(
        acme.ok("/api/v1/prefixes/10.70.1.0%2F24").await["monitored"],
        2
    );
}

/// Bad input: 400 with the parameter named.
async fn check_bad_input(acme: &sonde_tests::Api) {
    let (status, body) = acme.get("/api/v1/prefixes/10.70.1.5/24").await.unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did you mean 10.70.1.0/24"),
        "{body}"
    );
    let (status, body) = acme.get("/api/v1/targets?probe=icmp").await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("probe"), "{body}");
    let (status, _) = acme
        .get("/api/v1/series/a1/10.70.2.5?from=10&to=5")
        .await
        .unwrap();
    assert_eq!(status, 400);
    // `to=0` leaves no day before it: refused, never a negative `from`.
    let (status, body) = acme.get("/api/v1/series/a1/10.70.2.5?to=0").await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not before to = 0"),
        "{body}"
    );
    every_error_is_json(acme).await;
}

/// Refusals raised before any handler runs are JSON too, and a parameter
/// given twice is refused, not read last-wins.
async fn every_error_is_json(acme: &sonde_tests::Api) {
    let error = |status: u16, body: &serde_json::Value, code: u16, needle: &str| {
        assert_eq!(status, code, "{body}");
        let text = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{code}: not JSON: {body}"));
        assert!(text.contains(needle), "{code}: {text}");
    };
    let (s, b) = acme
        .send(reqwest::Method::DELETE, "/api/v1/agents", None, &[])
        .await;
    error(
        s,
        &b,
        405,
        "method DELETE is not allowed on \"/api/v1/agents\"",
    );
    // Just over the 64 KiB limit: sent whole before the answer, so the
    // client reads the 413 rather than a reset.
    let big = serde_json::json!({ "comment": "x".repeat(65 << 10) });
    let (s, b) = acme
        .send(reqwest::Method::POST, "/api/v1/silences", Some(&big), &[])
        .await;
    error(s, &b, 413, "request body too large");
    let long = format!("/api/v1/targets?agent={}", "a".repeat(9000));
    let (s, b) = acme.get(&long).await.unwrap();
    error(s, &b, 414, "at most 8192");
    let header = "h".repeat(40 << 10);
    let (s, b) = acme
        .send(
            reqwest::Method::GET,
            "/api/v1/agents",
            None,
            &[("x-big", &header)],
        )
        .await;
    error(s, &b, 431, "at most 32768");
    let (s, b) = acme
        .get("/api/v1/targets?limit=1&limit=5000")
        .await
        .unwrap();
    error(
        s,
        &b,
        400,
        "invalid query parameter \"limit\": given more than once",
    );
}

/// A series the caller may not see answers exactly as an absent one.
async fn check_grpc_hidden(
    q: &mut sonde_proto::v1::query_service_client::QueryServiceClient<tonic::transport::Channel>,
) {
    use sonde_proto::v1::GetSeriesRequest;
    // globex's agent outside acme's grants: as absent as a made-up one.
    let hidden = q
        .get_series(GetSeriesRequest {
            tenant: "globex".into(),
            agent: "g1".into(),
            target: "10.70.3.6".into(),
            ..GetSeriesRequest::default()
        })
        .await
        .unwrap_err();
    let absent = q
        .get_series(GetSeriesRequest {
            tenant: "globex".into(),
            agent: "g1".into(),
            target: "10.70.3.9".into(),
            ..GetSeriesRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    assert_eq!(
        (
            absent.code(),
            absent.message().replace("10.70.3.9", "10.70.3.6")
        ),
        (hidden.code(), hidden.message().to_owned())
    );
}

/// The same operations over gRPC `sonde.v1.QueryService`, scoped the same.
async fn check_grpc(world: &World) {
    use sonde_proto::v1::query_service_client::QueryServiceClient;
    use sonde_proto::v1::{
        GetPrefixGridRequest, GetSeriesRequest, ListPrefixesRequest, ListTargetsRequest,
    };
    let acme = world.cert("acme", Role::Viewer, "va");
    let mut q = QueryServiceClient::new(grpc_channel(world, &acme).await);
    let targets = q
        .list_targets(ListTargetsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let got: BTreeSet<String> = targets.targets.iter().map(|t| t.address.clone()).collect();
    let want: BTreeSet<String> = ["10.70.1.5", "10.70.1.6", "10.70.2.5", "10.70.3.5"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
    let t = &targets.targets[0];
    let avg = t.averages.as_ref().unwrap();
    assert_eq!(avg.last_1m.as_ref().unwrap().mean_ms, Some(2.0));
    let prefixes = q
        .list_prefixes(ListPrefixesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = prefixes
        .prefixes
        .iter()
        .map(|p| p.prefix.as_str())
        .collect();
    assert_eq!(names, ["10.70.1.0/24", "10.70.2.0/24", "10.70.3.0/24"]);
    let grid = q
        .get_prefix_grid(GetPrefixGridRequest {
            prefix: "10.70.1.0/24".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((grid.cells.len(), grid.monitored), (256, 2));
    assert_eq!(grid.cells[5].timeline.len(), 60);
    let denied = q
        .get_prefix_grid(GetPrefixGridRequest {
            prefix: "10.70.4.0/24".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "prefix 10.70.4.0/24 is not granted to your tenant"
    );
    let bad = q
        .get_prefix_grid(GetPrefixGridRequest {
            prefix: "10.70.1.0/23".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    check_grpc_hidden(&mut q).await;
    let series = q
        .get_series(GetSeriesRequest {
            agent: "a1".into(),
            target: "10.70.2.5".into(),
            ..GetSeriesRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(series.minutes.iter().map(|m| m.probes).sum::<u32>(), 10);
    let agent = world.cert("acme", Role::Agent, "a1");
    let mut as_agent = QueryServiceClient::new(grpc_channel(world, &agent).await);
    let refused = as_agent
        .list_targets(ListTargetsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

/// A visible series has its minute history: what the analysis has made
/// durable, at most a checkpoint (200 ms here) behind the live view.
async fn check_history(acme: &sonde_tests::Api) {
    let probes = || async {
        let h = acme.ok("/api/v1/series/a1/10.70.2.5").await;
        h["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["probes"].as_u64().unwrap())
            .sum::<u64>()
    };
    eventually(
        "a1's history of 10.70.2.5",
        Duration::from_secs(5),
        || async { (probes().await >= 10).then_some(()) },
    )
    .await;
    assert_eq!(probes().await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_sharing_a_prefix_see_exactly_their_grants() {
    let world = World::new();
    world.collector_config(GRANTS);
    let _collector = world.start_collector(&[]).await;
    let a1 = Agent::start_in(&world, "acme", "a1", AGENT);
    let g1 = Agent::start_in(&world, "globex", "g1", AGENT);
    a1.send(pings(&["10.70.1.5", "10.70.2.5", "10.70.3.5"], 10))
        .await;
    g1.send(pings(&["10.70.1.6", "10.70.3.6"], 10)).await;

    let acme = world.api(Some(&world.cert("acme", Role::Viewer, "va")));
    let globex = world.api(Some(&world.cert("globex", Role::Admin, "ga")));
    eventually(
        "acme sees its four targets",
        Duration::from_secs(20),
        || async {
            let got = addresses(&acme.ok("/api/v1/targets").await);
            (got.len() == 4).then_some(())
        },
    )
    .await;

    // Targets: everything a tenant's own agents measure, and what the
    // agents of tenants it trusts measure in its grants.
    let want = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        addresses(&acme.ok("/api/v1/targets").await),
        want(&["10.70.1.5", "10.70.1.6", "10.70.2.5", "10.70.3.5"])
    );
    assert_eq!(
        addresses(&globex.ok("/api/v1/targets").await),
        want(&["10.70.1.6", "10.70.3.6"])
    );
    let initech = world.api(Some(&world.cert("initech", Role::Viewer, "iv")));
    assert_eq!(addresses(&initech.ok("/api/v1/targets").await), want(&[]));
    let t = acme.ok("/api/v1/targets?prefix=10.70.2.0/24").await;
    let t = &t["targets"][0];
    assert_eq!(
        (t["agent"].as_str(), t["state"].as_str()),
        (Some("a1"), Some("up"))
    );
    assert_eq!(t["averages"]["1m"]["mean_ms"], 2.0);
    assert_eq!(t["averages"]["1h"]["loss_pct"], 0.0);

    // Prefixes: the granted ones, and where its own agents measure.
    assert_eq!(
        prefix_names(&acme.ok("/api/v1/prefixes").await),
        ["10.70.1.0/24", "10.70.2.0/24", "10.70.3.0/24"]
    );
    assert_eq!(
        prefix_names(&globex.ok("/api/v1/prefixes").await),
        ["10.70.1.0/24", "10.70.3.0/24"]
    );

    check_grid(&acme).await;
    // globex's grid of the shared prefix: its own cell only.
    assert_eq!(
        globex.ok("/api/v1/prefixes/10.70.1.0/24").await["monitored"],
        1
    );
    // acme's own measurement in globex's prefix: acme's cell only.
    let own = acme.ok("/api/v1/prefixes/10.70.3.0/24").await;
    assert_eq!(own["monitored"], 1, "{own}");
    assert_eq!(own["cells"][5]["monitored"], true);
    assert_eq!(own["cells"][6]["monitored"], false);
    assert_eq!(
        acme.ok("/api/v1/series/a1/10.70.3.5").await["series"]["agent"],
        "a1"
    );

    // A prefix neither granted nor measured: 403 naming it, nothing else.
    let (status, body) = acme.get("/api/v1/prefixes/10.70.4.0/24").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "prefix 10.70.4.0/24 is not granted to your tenant"
    );
    // a1 measures 10.70.2.5, but globex is neither granted it nor trusts
    // acme.
    assert_eq!(
        globex.get("/api/v1/prefixes/10.70.2.0/24").await.unwrap().0,
        403
    );
    // An untrusted agent's series in globex's own prefix reads exactly as
    // one that does not exist.
    let (status, hidden) = globex
        .get("/api/v1/series/a1/10.70.3.5?tenant=acme")
        .await
        .unwrap();
    let (absent_status, absent) = globex
        .get("/api/v1/series/a1/10.70.3.9?tenant=acme")
        .await
        .unwrap();
    assert_eq!((status, absent_status), (404, 404));
    assert_eq!(
        hidden["error"].as_str().unwrap(),
        absent["error"]
            .as_str()
            .unwrap()
            .replace("10.70.3.9", "10.70.3.5")
    );
    check_history(&acme).await;

    check_bad_input(&acme).await;
    check_sondectl(&world).await;
    check_grpc(&world).await;

    // Agents may not query.
    let agent_api = world.api(Some(&world.cert("acme", Role::Agent, "a1")));
    assert_eq!(agent_api.get("/api/v1/targets").await.unwrap().0, 403);
    a1.stop().await;
    g1.stop().await;
}

/// `rounds` results for each address, one per second, ending now; lost
/// when `lost` says so.
fn results(addresses: &[&str], rounds: i64, lost: &dyn Fn(&str) -> bool) -> Vec<Record> {
    let t0 = sonde_runtime::clock::unix_nanos() - rounds * 1_000_000_000;
    let mut out = Vec::new();
    for r in 0..rounds {
        for a in addresses {
            let down = lost(a);
            out.push(Record {
                kind: Some(record::Kind::Ping(PingResult {
                    target: (*a).to_owned(),
                    address: (*a).to_owned(),
                    sent_unix_nanos: t0 + r * 1_000_000_000,
                    rtt_nanos: if down { 0 } else { 2_000_000 },
                    status: if down {
                        PingStatus::Timeout
                    } else {
                        PingStatus::Ok
                    } as i32,
                    ..PingResult::default()
                })),
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_events_reach_every_tenant_granted_the_prefix_that_trusts_the_agent() {
    let world = World::new();
    world.collector_config(GRANTS);
    let _collector = world.start_collector(&[]).await;
    let g1 = Agent::start_in(&world, "globex", "g1", AGENT);
    // globex's agent loses a target in the shared prefix and one in its own.
    g1.send(results(
        &["10.70.1.6", "10.70.3.6", "10.70.3.7", "10.70.3.8"],
        20,
        &|a| a == "10.70.1.6" || a == "10.70.3.6",
    ))
    .await;
    let outages = |events: Vec<serde_json::Value>| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e["kind"] == "outage-start")
            .map(|e| e["detail"]["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let globex = world.api(Some(&world.cert("globex", Role::Viewer, "gv")));
    let both = eventually(
        "globex sees both outages",
        Duration::from_secs(20),
        || async {
            let seen = outages(globex.events().await);
            (seen.len() == 2).then_some(seen)
        },
    )
    .await;
    assert_eq!(
        both,
        BTreeSet::from(["10.70.1.6".to_owned(), "10.70.3.6".to_owned()])
    );
    // acme trusts globex and is granted 10.70.1.0/24 only: it sees that
    // outage (its own correlation's), not the other.
    let acme = world.api(Some(&world.cert("acme", Role::Viewer, "av")));
    assert_eq!(
        outages(acme.events().await),
        BTreeSet::from(["10.70.1.6".to_owned()])
    );
    let acme_outages = acme.ok("/api/v1/outages?open=true").await;
    let subjects: Vec<&str> = acme_outages["outages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["10.70.1.6"]);
    assert_eq!(acme_outages["outages"][0]["tenant"], "acme");
    // initech is granted it too but does not trust globex: nothing.
    let initech = world.api(Some(&world.cert("initech", Role::Viewer, "iv")));
    assert_eq!(outages(initech.events().await), BTreeSet::new());
    let none = initech.ok("/api/v1/outages").await;
    assert_eq!(none["outages"], serde_json::json!([]), "{none}");
    g1.stop().await;
}
