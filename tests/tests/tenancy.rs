//! Tenant scoping of the HTTP API: a viewer sees its own tenant's agents and
//! events only, an operator tenant sees everything, an agent certificate
//! sees nothing, and asking for another tenant's agent reveals nothing;
//! and, end to end in network namespaces, whose measurements a tenant
//! sees and is paged for (its own agents', trusted tenants', operators').

use std::time::Duration;

use sonde_proto::Role;
use sonde_tests::{World, event_kinds, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_only_their_tenant_and_operators_see_all() {
    let world = World::new();
    world.collector_config("[access]\noperator-tenants = [\"noc\"]\n");
    let _collector = world.start_collector(&[]).await;

    let a1 = world.cert("tenant-a", Role::Agent, "a1");
    let b1 = world.cert("tenant-b", Role::Agent, "b1");
    world.agent_config("a1", &a1, "[heartbeat]\ninterval = \"200ms\"\n");
    world.agent_config("b1", &b1, "[heartbeat]\ninterval = \"200ms\"\n");
    let _agent_a = world.start_agent("a1", &[]);
    let _agent_b = world.start_agent("b1", &[]);

    let viewer_a = world.api(Some(&world.cert("tenant-a", Role::Viewer, "va")));
    let admin_b = world.api(Some(&world.cert("tenant-b", Role::Admin, "ab")));
    let noc = world.api(Some(&world.cert("noc", Role::Viewer, "ops")));
    let agent_api = world.api(Some(&a1));

    eventually(
        "both agents registered",
        Duration::from_secs(20),
        || async {
            let a = noc.agent("tenant-a", "a1").await?;
            let b = noc.agent("tenant-b", "b1").await?;
            (a["connected"] == true && b["connected"] == true).then_some(())
        },
    )
    .await;

    let names = |body: serde_json::Value| -> Vec<String> {
        body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{}/{}",
                    a["tenant"].as_str().unwrap(),
                    a["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(viewer_a.ok("/api/v1/agents").await),
        vec!["tenant-a/a1"]
    );
    assert_eq!(
        names(admin_b.ok("/api/v1/agents").await),
        vec!["tenant-b/b1"]
    );
    assert_eq!(
        names(noc.ok("/api/v1/agents").await),
        vec!["tenant-a/a1", "tenant-b/b1"]
    );

    let a_events = event_kinds(&viewer_a.events().await);
    assert_eq!(
        a_events,
        vec![("a1".to_owned(), "agent-registered".to_owned())]
    );
    let b_events = event_kinds(&admin_b.events().await);
    assert_eq!(
        b_events,
        vec![("b1".to_owned(), "agent-registered".to_owned())]
    );
    let mut all = event_kinds(&noc.events().await);
    all.sort();
    assert_eq!(
        all,
        vec![
            ("a1".to_owned(), "agent-registered".to_owned()),
            ("b1".to_owned(), "agent-registered".to_owned())
        ]
    );
    // Naming another tenant's agent yields nothing, not an error that
    // would confirm it exists.
    let body = viewer_a.ok("/api/v1/events?agent=b1").await;
    assert_eq!(body["events"], serde_json::json!([]));
    // Agent certificates may not read the API.
    let (status, body) = agent_api.get("/api/v1/agents").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("role agent"),
        "{body}"
    );
    // Bad parameters are named.
    let (status, body) = viewer_a.get("/api/v1/events?limit=abc").await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    let (status, body) = viewer_a
        .get("/api/v1/events?tenant=tenant-b")
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("tenant"), "{body}");
    let (status, _) = viewer_a.get("/api/v1/nothing").await.unwrap();
    assert_eq!(status, 404);
}

/// The tenancy policy end to end, in network namespaces with real agents
/// and notifications (`collector/src/read/access.rs`):
///
/// ```text
///   a1 (acme) ─┐                          ┌ 10.82.0.5 (acme's /24)
///   a2 (noc)  ─┴─ core (collector) ── tgt ┤ 10.82.1.5, 10.82.1.6 (globex's)
///                  │ 198.18.86.2/30        └ (cut with nftables)
///                  └── test: API client, fake Discord per tenant
/// ```
///
/// acme's a1 pings globex's 10.82.1.5, the operator tenant's a2 pings
/// globex's 10.82.1.6; both are cut. Without `trust`, globex sees nothing
/// of a1 anywhere and is paged only for 10.82.1.6 (an operator's agent
/// counts for every tenant granted the prefix); acme sees and is paged
/// for what its own agent measures, outside its grants too. Trusting acme
/// (a reload, mid-outage) shows globex a1's series and pages it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn whose_measurements_a_tenant_sees_and_is_paged_for() {
    use sonde_tests::receivers::Discord;
    use sonde_tests::{Api, star};

    let world = World::new();
    let mut lab = sonde_tests::netns::Lab::new("tnc");
    let core = lab.host("core");
    let tgt = lab.host("tgt");
    lab.link(&core, "10.81.0.1/24", &tgt, "10.81.0.2/24");
    lab.ip(&tgt, &["route", "add", "default", "via", "10.81.0.1"]);
    lab.ip(&core, &["route", "add", "10.82.0.0/23", "via", "10.81.0.2"]);
    for a in ["10.82.0.5", "10.82.1.5", "10.82.1.6"] {
        lab.ip(&tgt, &["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    lab.link_root(&core, "198.18.86.2/30", "198.18.86.1/30");
    // A managed host name the collector resolves into acme's grant and
    // a1 into globex's prefix (each namespace has its own hosts file).
    lab.hosts_file(&core, "10.82.0.5 db.tenancy.test");
    lab.hosts_file(&lab.name("a1"), "10.82.1.9 db.tenancy.test");
    let discord_acme = Discord::start("198.18.86.1:0".parse().unwrap()).await;
    let discord_globex = Discord::start("198.18.86.1:0".parse().unwrap()).await;
    let dir = world.dir();
    sonde_tests::write_secret(&dir.join("acme.url"), discord_acme.url());
    sonde_tests::write_secret(&dir.join("globex.url"), discord_globex.url());
    let tables = |trust: &str| {
        format!(
            "[access]\noperator-tenants = [\"noc\"]\n\
             [[tenant]]\nname = \"acme\"\nprefixes = [\"10.82.0.0/24\"]\n\
             [[tenant]]\nname = \"globex\"\nprefixes = [\"10.82.1.0/24\"]\ntrust = [{trust}]\n\
             [analysis]\ncheckpoint = \"200ms\"\n\
             [analysis.correlation]\nsettle = \"3s\"\n\
             [[alerting.route]]\nname = \"acme\"\ntenant = \"acme\"\nreceiver = \"acme\"\n\
             group-wait = \"1s\"\ngroup-interval = \"2s\"\n\
             [[alerting.route]]\nname = \"globex\"\ntenant = \"globex\"\nreceiver = \"globex\"\n\
             group-wait = \"1s\"\ngroup-interval = \"2s\"\n\
             [[alerting.receiver]]\nname = \"acme\"\n\
             [alerting.receiver.discord]\nurl-file = \"{}\"\n\
             [[alerting.receiver]]\nname = \"globex\"\n\
             [alerting.receiver.discord]\nurl-file = \"{}\"\n",
            dir.join("acme.url").display(),
            dir.join("globex.url").display(),
        )
    };
    let config = star::collector_config(&world, &tables(""));
    let mut collector =
        star::spawn_in(&core, "sonde-collector", &config, dir.join("collector.log"));
    let ping = |targets: &str| {
        format!(
            "[heartbeat]\ninterval = \"1s\"\n\
             [[ping]]\ntargets = [{targets}]\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
        )
    };
    let (_, mut a1) = star::agent_of(
        &world,
        &mut lab,
        &core,
        1,
        "acme",
        &ping("\"10.82.0.5\", \"10.82.1.5\""),
    );
    let (_, mut a2) = star::agent_of(&world, &mut lab, &core, 2, "noc", &ping("\"10.82.1.6\""));
    let ca = world.pki.dir().join("ca.pem");
    let at = "198.18.86.2:7443".parse().unwrap();
    let api =
        |tenant: &str, name: &str| Api::via(&ca, Some(&world.cert(tenant, Role::Viewer, name)), at);
    let (acme, globex, noc) = (api("acme", "ann"), api("globex", "gus"), api("noc", "ops"));
    eventually("3 series up", Duration::from_secs(60), || async {
        let v = noc.get("/api/v1/targets").await.ok()?.1;
        let up = v["targets"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "up")
            .count();
        (up == 3).then_some(())
    })
    .await;

    lab.nft(
        &tgt,
        "table inet t {\n chain in {\n type filter hook input priority 0;\n \
         ip daddr { 10.82.1.5, 10.82.1.6 } icmp type echo-request drop\n }\n}\n",
    );
    paged(&discord_acme, "acme paged for 10.82.1.5", |t| {
        t.contains("10.82.1.5")
    })
    .await;
    paged(&discord_globex, "globex paged for 10.82.1.6", |t| {
        t.contains("10.82.1.6")
    })
    .await;
    // Longer than settle + group-wait + group-interval: what has not
    // arrived by now is not coming.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (to_acme, to_globex) = (texts(&discord_acme), texts(&discord_globex));
    assert!(
        to_acme.iter().all(|t| !t.contains("10.82.1.6")),
        "acme is not granted 10.82.1.0/24 and a2 is not its agent: {to_acme:#?}"
    );
    assert!(
        to_globex
            .iter()
            .all(|t| !t.contains("10.82.1.5") && !t.contains("a1")),
        "globex does not trust acme: {to_globex:#?}"
    );
    assert!(
        discord_acme
            .posted()
            .iter()
            .chain(&discord_globex.posted())
            .all(|p| p.problems.is_empty()),
        "Discord request shape"
    );

    // Nothing of a1 in any of globex's views; acme sees its own.
    untrusted_is_invisible(&globex).await;
    let own = acme.ok("/api/v1/series/a1/10.82.1.5?tenant=acme").await;
    assert_eq!(own["series"]["agent"], "a1", "{own}");
    let outages = acme.ok("/api/v1/outages").await;
    assert!(outages.to_string().contains("10.82.1.5"), "{outages}");
    agent_checks_its_own_resolution(
        &Api::via(&ca, Some(&world.cert("acme", Role::Admin, "ada")), at),
        &a1,
    )
    .await;

    // globex comes to trust acme: at once it sees a1's series, and is
    // paged for the outage already under way.
    assert_eq!(star::collector_config(&world, &tables("\"acme\"")), config);
    collector.signal(nix::sys::signal::Signal::SIGHUP);
    paged(&discord_globex, "globex paged for 10.82.1.5", |t| {
        t.contains("10.82.1.5")
    })
    .await;
    let seen = globex.ok("/api/v1/series/a1/10.82.1.5?tenant=acme").await;
    assert_eq!(seen["series"]["agent"], "a1", "{seen}");

    // Restored: each tenant gets the resolution of what it was paged for.
    lab.nft(&tgt, "");
    let resolved = |t: &str| t.contains("RESOLVED") && t.contains("10.82.1.5");
    paged(&discord_globex, "globex: 10.82.1.5 resolved", resolved).await;
    paged(&discord_acme, "acme: 10.82.1.5 resolved", resolved).await;
    a1.terminate();
    a2.terminate();
    collector.terminate();
}

/// The bodies of the messages `d` accepted.
fn texts(d: &sonde_tests::receivers::Discord) -> Vec<String> {
    d.posted()
        .iter()
        .filter(|p| p.status == 204)
        .map(|p| p.body.to_string())
        .collect()
}

/// Waits until `d` accepted a message whose body matches.
async fn paged(d: &sonde_tests::receivers::Discord, what: &str, matches: impl Fn(&str) -> bool) {
    eventually(what, Duration::from_secs(60), || async {
        texts(d).iter().any(|t| matches(t)).then_some(())
    })
    .await;
}

/// acme's admin defines a host name that the collector resolves inside
/// acme's grant (so it is accepted) but a1 resolves into globex's prefix:
/// a1 does not probe it, and reports why.
async fn agent_checks_its_own_resolution(admin: &sonde_tests::Api, a1: &sonde_tests::Proc) {
    let body = serde_json::json!({"name": "db", "target": "db.tenancy.test", "kind": "ping", "interval": "1s", "agents": ["a1"]});
    let (status, v) = admin
        .send(reqwest::Method::POST, "/api/v1/targets", Some(&body), &[])
        .await;
    assert_eq!(status, 201, "{v}");
    let latest = eventually(
        "db.tenancy.test reported",
        Duration::from_secs(30),
        || async {
            let (status, v) = admin
                .get("/api/v1/series/a1/db.tenancy.test?tenant=acme")
                .await
                .ok()?;
            (status == 200).then(|| v["series"]["averages"]["latest"].clone())
        },
    )
    .await;
    assert_eq!(latest["status"], "resolve-error", "{latest}");
    let log = a1.log_text();
    assert!(
        log.contains("10.82.1.9 outside the prefixes granted to this agent's tenant; not probed"),
        "{log}"
    );
    assert!(
        !log.contains("ICMP target set applied targets=3"),
        "a1 probes only its own two targets: {log}"
    );
}

/// globex's viewer, not trusting acme: a1's series to 10.82.1.5 is absent
/// from the targets, the prefix list, the grid, the live stream and the
/// replay, answers as a series that does not exist, and has no outage or
/// event; the operator agent's 10.82.1.6 is there, down.
async fn untrusted_is_invisible(globex: &sonde_tests::Api) {
    let targets = globex.ok("/api/v1/targets").await;
    let listed: Vec<String> = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["agent"].as_str().unwrap(),
                t["target"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(listed, ["a2/10.82.1.6"], "{targets}");
    let prefixes = globex.ok("/api/v1/prefixes").await;
    assert_eq!(
        prefixes["prefixes"][0]["prefix"], "10.82.1.0/24",
        "{prefixes}"
    );
    assert_eq!(prefixes["prefixes"][0]["series"], 1, "{prefixes}");
    let grid = globex.ok("/api/v1/prefixes/10.82.1.0/24").await;
    assert!(!grid.to_string().contains("a1"), "{grid}");
    let (status, hidden) = globex
        .get("/api/v1/series/a1/10.82.1.5?tenant=acme")
        .await
        .unwrap();
    let (_, absent) = globex
        .get("/api/v1/series/a1/10.82.1.99?tenant=acme")
        .await
        .unwrap();
    assert_eq!(status, 404, "{hidden}");
    assert_eq!(
        hidden["error"].as_str().unwrap(),
        absent["error"]
            .as_str()
            .unwrap()
            .replace("10.82.1.99", "10.82.1.5")
    );
    for path in ["/api/v1/outages", "/api/v1/events?limit=1000"] {
        let v = globex.ok(path).await;
        let text = v.to_string();
        assert!(
            !text.contains("10.82.1.5") && !text.contains("\"a1\""),
            "{path}: {v}"
        );
    }
    assert!(
        globex
            .ok("/api/v1/outages")
            .await
            .to_string()
            .contains("10.82.1.6")
    );
    let now = sonde_tests::now_ms();
    let replay = globex.ok(&format!("/api/v1/replay?at={now}")).await;
    let cells = &replay["prefixes"][0];
    assert_eq!(cells["prefix"], "10.82.1.0/24", "{replay}");
    // The minute so far: 10.82.1.6 measured (with losses), .5 not at all.
    assert_eq!(
        (cells["s"][5].as_u64(), cells["s"][6].as_u64() > Some(0)),
        (Some(0), true),
        "{cells}"
    );
    let (_, frame) = globex.first_live_frame().await;
    let cells = &frame["changed"][0];
    assert_eq!(
        (cells["s"][5].as_u64(), cells["s"][6].as_u64()),
        (Some(0), Some(3)),
        "{frame}"
    );
}
