//! The whole pipeline with real probes: the `sonde-agent` binary pings 100
//! loopback targets every second and streams to a real collector. The
//! collector is down for 20 s, then the agent is killed with SIGKILL and
//! restarted; the collector's ingest log must hold every result of the
//! outage exactly once (each target's results one interval apart, no hole,
//! no repeat) and nothing twice anywhere. And probes the collector assigns
//! to an agent reach it, change on the collector's reload, and keep running
//! across an agent restart while the collector is down.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use nix::sys::signal::Signal;
use sonde_proto::Role;
use sonde_runtime::clock::unix_nanos;
use sonde_tests::ledger::{SECOND, contiguous, probe_times};
use sonde_tests::{World, eventually};

/// Send times per address and repeated (address, time) pairs; every ping
/// answered (the targets are loopback).
fn delivered(world: &World) -> (BTreeMap<String, Vec<i64>>, usize) {
    let t = probe_times(world);
    assert_eq!(t.failed, 0, "loopback pings failed");
    (t.per, t.repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_outage_and_agent_kill_9_with_real_probes() {
    let world = World::new();
    world.collector_config("");
    let mut collector = world.start_collector(&[]).await;
    let targets: Vec<String> = (1..=100).map(|i| format!("\"127.0.6.{i}\"")).collect();
    let tables = format!(
        "[[ping]]\ntargets = [{}]\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        targets.join(", ")
    );
    let cert = world.cert("acme", Role::Agent, "prober");
    world.agent_config("prober", &cert, &tables);
    let mut agent = world.start_agent("prober", &[]);

    let started = unix_nanos();
    eventually("100 targets reporting", Duration::from_secs(20), || async {
        (delivered(&world).0.len() == 100).then_some(())
    })
    .await;

    // The collector is down for 20 s while the agent keeps probing.
    collector.kill9();
    let down = unix_nanos();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let _collector = world.start_collector(&[]).await;
    let up = unix_nanos();
    eventually("the outage replayed", Duration::from_secs(30), || async {
        let (per, _) = delivered(&world);
        per.values()
            .all(|t| t.last().is_some_and(|l| *l > up + 2 * SECOND))
            .then_some(())
    })
    .await;

    // kill -9 mid-batch (at 100 results/s a batch is always filling), then
    // restart on the same spool.
    agent.kill9();
    let killed = unix_nanos();
    let (before_kill, _) = delivered(&world);
    let mut agent = world.start_agent("prober", &[]);
    let restarted = unix_nanos();
    eventually(
        "results after the restart",
        Duration::from_secs(30),
        || async {
            let (per, _) = delivered(&world);
            per.values()
                .all(|t| t.last().is_some_and(|l| *l > restarted + 4 * SECOND))
                .then_some(())
        },
    )
    .await;
    agent.terminate();

    let (per, repeats) = delivered(&world);
    assert_eq!(per.len(), 100);
    assert_eq!(repeats, 0, "results stored twice");
    // Everything from the start to shortly before the kill, across the
    // collector's outage: one result per target per second.
    let window = (started + 2 * SECOND, killed - 3 * SECOND);
    contiguous(&per, window.0, window.1).unwrap();
    let outage: usize = per
        .values()
        .map(|t| t.iter().filter(|s| (down..up).contains(*s)).count())
        .sum();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let seconds = ((up - down) / SECOND) as usize;
    eprintln!("outage {seconds} s: {outage} results of 100 targets delivered once");
    assert!(outage >= 100 * seconds, "{outage} results in {seconds} s");
    // What was stored before the kill is all still there.
    for (addr, times) in &before_kill {
        let now: HashSet<&i64> = per[addr].iter().collect();
        assert!(times.iter().all(|t| now.contains(t)), "{addr} lost results");
    }
    // After the restart, probing resumed without holes.
    contiguous(&per, restarted + 2 * SECOND, restarted + 4 * SECOND).unwrap();
}

/// The newest send time per address.
fn latest(world: &World) -> BTreeMap<String, i64> {
    delivered(world)
        .0
        .into_iter()
        .filter_map(|(a, t)| Some((a, *t.last()?)))
        .collect()
}

fn assignment(address: &str) -> String {
    format!(
        "[[agent]]\ntenant = \"acme\"\nname = \"central\"\n\
         [[agent.ping]]\ntargets = [\"{address}\"]\ninterval = \"200ms\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_assigned_probes_follow_its_reloads() {
    let world = World::new();
    world.collector_config(&assignment("127.0.7.1"));
    let collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "central");
    // The agent's own config has no probes at all.
    world.agent_config("central", &cert, "");
    let agent = world.start_agent("central", &[]);
    eventually(
        "assigned target probed",
        Duration::from_secs(20),
        || async { latest(&world).contains_key("127.0.7.1").then_some(()) },
    )
    .await;

    // A new assignment on reload: the agent switches without a restart.
    world.collector_config(&assignment("127.0.7.2"));
    collector.signal(Signal::SIGHUP);
    let reloaded = unix_nanos();
    eventually("new target probed", Duration::from_secs(20), || async {
        latest(&world)
            .get("127.0.7.2")
            .is_some_and(|t| *t > reloaded + SECOND)
            .then_some(())
    })
    .await;
    let last_old = latest(&world)["127.0.7.1"];
    assert!(last_old < reloaded + SECOND, "old target still probed");
    agent
        .wait_log(
            &["collector assigned a new set of probes"],
            Duration::from_secs(5),
        )
        .await;
    drop(agent);

    // The collector goes away; a restarted agent still runs its stored
    // assignment, and delivers once the collector is back.
    drop(collector);
    let agent = world.start_agent("central", &[]);
    agent
        .wait_log(
            &["ICMP target set applied", "targets=1"],
            Duration::from_secs(10),
        )
        .await;
    let offline = unix_nanos();
    let _collector = world.start_collector(&[]).await;
    eventually(
        "probed while the collector was away",
        Duration::from_secs(20),
        || async {
            let (per, _) = delivered(&world);
            per.get("127.0.7.2")?
                .iter()
                .any(|t| *t > offline && *t < offline + SECOND)
                .then_some(())
        },
    )
    .await;
}
