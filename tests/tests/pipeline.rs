//! The result pipeline end to end: agent spool → gRPC batches → collector
//! ingest log → acknowledgement. A real collector process; the agent
//! library in-process, fed synthetic results (the probe engines feed the
//! same channel). Every result must arrive exactly once across collector
//! kill -9, agent restart, and — when the spool cap forces a drop — be
//! accounted for by gap records.

use std::time::Duration;

use sonde_tests::agent::Agent;
use sonde_tests::ledger::{assert_exactly_once, delivered, ping};
use sonde_tests::{World, eventually};

const AGENT: &str =
    "[heartbeat]\ninterval = \"200ms\"\n[batch]\nmax-records = 100\nmax-delay = \"100ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_kill_9_mid_stream_loses_and_duplicates_nothing() {
    let world = World::new();
    world.collector_config("");
    let mut collector = world.start_collector(&[]).await;
    let agent = Agent::start(&world, "pipe", AGENT);
    agent.send((0..1000).map(|i| ping(i, 0))).await;
    eventually("first results stored", Duration::from_secs(20), || async {
        (delivered(&world).per_target.len() >= 500).then_some(())
    })
    .await;

    collector.kill9();
    agent.send((1000..3000).map(|i| ping(i, 0))).await; // spooled while the collector is down
    let _collector = world.start_collector(&[]).await;
    agent.send((3000..4000).map(|i| ping(i, 0))).await;

    eventually(
        "all 4000 results stored",
        Duration::from_secs(30),
        || async { (delivered(&world).per_target.len() >= 4000).then_some(()) },
    )
    .await;
    agent.stop().await;
    let d = delivered(&world);
    assert_exactly_once(&d, 4000);
    assert_eq!(d.gap_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_results_replay_after_agent_restart() {
    let world = World::new();
    world.collector_config("");
    // The collector is down while the first agent process runs.
    let agent = Agent::start(&world, "replay", AGENT);
    agent.send((0..2000).map(|i| ping(i, 0))).await;
    agent.stop().await;

    let _collector = world.start_collector(&[]).await;
    let agent = Agent::start(&world, "replay", AGENT);
    agent.send((2000..2500).map(|i| ping(i, 0))).await;
    eventually(
        "all 2500 results stored",
        Duration::from_secs(30),
        || async { (delivered(&world).per_target.len() >= 2500).then_some(()) },
    )
    .await;
    agent.stop().await;
    let d = delivered(&world);
    assert_exactly_once(&d, 2500);
    // One spool, numbered from 1 without holes.
    let seqs: Vec<u64> = d.batches.iter().map(|b| b.1).collect();
    assert_eq!(
        seqs,
        (1..=u64::try_from(seqs.len()).unwrap()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_cap_drops_are_reported_as_gaps_with_the_right_count() {
    let world = World::new();
    world.collector_config("");
    let tables = format!("{AGENT}[spool]\nmax-size = \"64KiB\"\n");
    let agent = Agent::start(&world, "capped", &tables);
    // About 1.2 MB of results against a 64 KiB spool, collector down.
    agent.send((0..5000).map(|i| ping(i, 200))).await;
    agent.stop().await;

    let _collector = world.start_collector(&[]).await;
    let agent = Agent::start(&world, "capped", &tables);
    let d = eventually("the spool drained", Duration::from_secs(30), || async {
        let d = delivered(&world);
        (d.per_target.len() as u64 + d.gap_dropped == 5000).then_some(d)
    })
    .await;
    agent.stop().await;
    assert!(
        d.gap_dropped > 4000,
        "only {} dropped: the cap did not bite",
        d.gap_dropped
    );
    assert!(d.per_target.values().all(|c| *c == 1), "duplicates");
}
