//! Outage correlation with real agents probing real hosts in network
//! namespaces: one agent's network cut off, one target cut off for three
//! agents, 200 of the 254 hosts of a /24 cut off — each is one outage of
//! the right kind, not hundreds; an agent that stops is "agent missing"
//! and no outage.
//!
//! ```text
//!   a1 ─┐                         ┌ 10.82.0.1–254 (the /24)
//!   a2 ─┼─ core (collector) ── tgt┤
//!   a3 ─┘  10.80.N.1    10.81.0.1 └ 10.83.0.1–30
//! ```
//! Everything runs inside the namespaces (the collector too); the test
//! reads events with `sondectl` run in the collector's namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use sonde_proto::Role;
use sonde_tests::netns::Lab;
use sonde_tests::{Proc, World, eventually, star};

/// The collector's correlation settle time here, shorter than the default
/// to keep the test short: a series down this long (by the slowest
/// reporting agent's clock) is attributed. Before the analysis judged by
/// the slowest agent, 3 s let one agent's results outrun the others' and a
/// target outage was first reported as a path outage. Absence of other
/// outages is checked by waiting it out (plus a margin).
const SETTLE_S: u64 = 3;
const QUIET: Duration = Duration::from_secs(SETTLE_S + 5);

struct Setup {
    world: World,
    lab: Lab,
    core: String,
    tgt: String,
    agents: Vec<String>,
    procs: Vec<Proc>,
}

fn setup() -> Setup {
    let world = World::new();
    let mut lab = Lab::new("corr");
    let core = lab.host("core");
    let tgt = lab.host("tgt");
    lab.link(&core, "10.81.0.1/24", &tgt, "10.81.0.2/24");
    lab.ip(&tgt, &["route", "add", "default", "via", "10.81.0.1"]);
    lab.ip(&core, &["route", "add", "10.82.0.0/15", "via", "10.81.0.2"]);
    for i in 1..=254 {
        lab.ip(
            &tgt,
            &["addr", "add", &format!("10.82.0.{i}/32"), "dev", "lo"],
        );
    }
    for i in 1..=30 {
        lab.ip(
            &tgt,
            &["addr", "add", &format!("10.83.0.{i}/32"), "dev", "lo"],
        );
    }
    // The collector, inside `core`.
    let config = star::collector_config(
        &world,
        &format!(
            "[access]\noperator-tenants = [\"noc\"]\n[analysis]\ncheckpoint = \"200ms\"\n\
             [analysis.correlation]\nsettle = \"{SETTLE_S}s\"\n"
        ),
    );
    let mut procs = vec![star::spawn_in(
        &core,
        "sonde-collector",
        &config,
        world.dir().join("collector.log"),
    )];
    let mut agents = Vec::new();
    for n in 1..=3 {
        let (ns, agent) = star::agent(
            &world,
            &mut lab,
            &core,
            n,
            "[heartbeat]\ninterval = \"1s\"\n\
             [[ping]]\ntargets = [\"10.82.0.0/24\", \"10.83.0.0/27\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        );
        procs.push(agent);
        agents.push(ns);
    }
    Setup {
        world,
        lab,
        core,
        tgt,
        agents,
        procs,
    }
}

/// `sondectl --json ARGS` as the operator, run inside `core`.
fn ctl(s: &Setup, args: &[&str]) -> Option<serde_json::Value> {
    let cert = s.world.cert("noc", Role::Viewer, "ops");
    star::ctl_json(&s.world, &s.lab, &s.core, "noc", &cert, args)
}

/// Outage events so far: (kind, scope, subject) in order.
fn outage_events(s: &Setup) -> Vec<(String, String, String)> {
    let Some(v) = ctl(s, &["events", "--limit", "1000"]) else {
        return Vec::new();
    };
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("outage-")))
        .map(|e| {
            let f = |k: &str| e["detail"][k].as_str().unwrap_or("").to_owned();
            (
                e["kind"].as_str().unwrap().to_owned(),
                f("scope"),
                f("subject"),
            )
        })
        .collect()
}

/// Applies `rules` in `ns`, waits for the one outage it must cause to
/// start, lifts the rules, waits for it to end, and checks nothing else
/// was reported meanwhile.
async fn one_outage(s: &Setup, ns: &str, rules: &str, scope: &str, subject: &str) {
    let before = outage_events(s).len();
    s.lab.nft(ns, rules);
    let start = (
        "outage-start".to_owned(),
        scope.to_owned(),
        subject.to_owned(),
    );
    eventually(
        &format!("{scope} outage of {subject}"),
        Duration::from_secs(60),
        || async { outage_events(s)[before..].contains(&start).then_some(()) },
    )
    .await;
    // Outages of other series would show within the settle time.
    tokio::time::sleep(QUIET).await;
    s.lab.nft(ns, "");
    let end = (
        "outage-end".to_owned(),
        scope.to_owned(),
        subject.to_owned(),
    );
    let new = eventually(
        &format!("end of the {scope} outage"),
        Duration::from_secs(60),
        || async {
            let all = outage_events(s);
            all[before..].contains(&end).then(|| all[before..].to_vec())
        },
    )
    .await;
    assert_eq!(
        new,
        vec![start, end],
        "exactly one outage, of the right kind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_are_attributed_to_their_cause() {
    let mut s = setup();
    // All three agents connected and every target up.
    eventually(
        "3 agents × 284 targets up",
        Duration::from_secs(60),
        || async {
            let v = ctl(&s, &["targets", "--limit", "10000"])?;
            let mut up: BTreeMap<String, usize> = BTreeMap::new();
            for t in v["targets"].as_array()? {
                if t["state"] == "up" {
                    *up.entry(t["agent"].as_str()?.to_owned()).or_default() += 1;
                }
            }
            (up.len() == 3 && up.values().all(|n| *n == 284)).then_some(())
        },
    )
    .await;
    assert!(
        outage_events(&s).is_empty(),
        "outages before any cut: {:?}",
        outage_events(&s)
    );

    // 1. a1 cut off from everything it probes (its collector link stays).
    let drop_probes = "table inet t {\n chain out {\n type filter hook output priority 0;\n \
                       ip daddr 10.82.0.0/15 drop\n }\n}\n";
    one_outage(&s, &s.agents[0], drop_probes, "agent-network", "acme/a1").await;

    // 2. One target cut off for all three agents.
    let drop_one = "table inet t {\n chain in {\n type filter hook input priority 0;\n \
                    ip daddr 10.82.0.7 icmp type echo-request drop\n }\n}\n";
    one_outage(&s, &s.tgt, drop_one, "target", "10.82.0.7").await;

    // 3. 200 of the 254 hosts of the /24.
    let drop_200 = "table inet t {\n chain in {\n type filter hook input priority 0;\n \
                    ip daddr 10.82.0.1-10.82.0.200 icmp type echo-request drop\n }\n}\n";
    one_outage(&s, &s.tgt, drop_200, "prefix", "10.82.0.0/24").await;

    // 4. An agent that stops is "agent missing", not outages of its
    // targets.
    let before = outage_events(&s).len();
    s.procs[3].kill9();
    eventually("a3 missing", Duration::from_secs(30), || async {
        let v = ctl(&s, &["events", "--limit", "1000"])?;
        v["events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "agent-missing" && e["agent"] == "a3")
            .then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        outage_events(&s)[before..],
        [],
        "outages for a missing agent's targets"
    );
}
