//! Faults, each with an exact count of what was delivered: a disk that
//! fills up under the agent's spool and under the collector's store,
//! a collector killed again and again during ingest (also while shared
//! transactions of sixteen agents are in flight), the export's server
//! killed during export, an agent cut off from the network, and an agent
//! whose clock jumps.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sonde_agent::spool::{Spool, SpoolLimits};
use sonde_proto::Role;
use sonde_proto::v1::record;
use sonde_runtime::clock::unix_nanos;
use sonde_tests::agent::Agent;
use sonde_tests::ledger::{SECOND, assert_exactly_once, contiguous, delivered, ping, probe_times};
use sonde_tests::netns::Lab;
use sonde_tests::tmpfs::Tmpfs;
use sonde_tests::{Proc, World, bin, eventually};
use tokio_util::sync::CancellationToken;

/// An in-process agent that seals a batch every 100 ms and reconnects
/// within half a second.
const FAST: &str =
    "[heartbeat]\ninterval = \"200ms\"\n[batch]\nmax-records = 100\nmax-delay = \"100ms\"\n";

/// Feeds `agent` 50 numbered results every 250 ms until `stop`; returns
/// how many it fed.
fn feed(agent: Arc<Agent>, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    feed_from(agent, 0, stop)
}

/// As [`feed`], numbering from `base`.
fn feed_from(
    agent: Arc<Agent>,
    base: usize,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.is_cancelled() {
            agent
                .send((base + n..base + n + 50).map(|i| ping(i, 0)))
                .await;
            n += 50;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        n
    })
}

/// Stops the feeder and the agent once everything fed is in the log;
/// returns how many results were fed.
async fn finish(
    world: &World,
    agent: Arc<Agent>,
    stop: CancellationToken,
    feeder: tokio::task::JoinHandle<usize>,
) -> usize {
    stop.cancel();
    let n = feeder.await.unwrap();
    eventually(
        &format!("all {n} results stored"),
        Duration::from_secs(60),
        || async { (delivered(world).per_target.len() >= n).then_some(()) },
    )
    .await;
    Arc::try_unwrap(agent)
        .ok()
        .expect("feeder done")
        .stop()
        .await;
    n
}

/// The spool on a disk that fills up: appends fail with an error naming
/// the spool, nothing already written is damaged, and once there is room
/// again new batches follow the last whole one; after a restart every
/// batch that was appended successfully reads back, in order.
#[test]
fn spool_on_a_full_disk_keeps_every_batch_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "256k");
    let spool_dir = disk.path().join("spool");
    let limits = SpoolLimits::new(64 * 1024 * 1024, Duration::from_secs(86_400));
    let (mut spool, _) = Spool::open(&spool_dir, limits).unwrap();
    // Another file takes most of the disk.
    disk.fill("filler");
    std::fs::OpenOptions::new()
        .write(true)
        .open(disk.path().join("filler"))
        .unwrap()
        .set_len(200 * 1024)
        .unwrap();

    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut next = 0;
    // ~6 KiB batches: a few fit, then the disk is full; each refusal takes
    // part of a record with it (the test checks the free space moved).
    for _ in 0..40 {
        let records: Vec<_> = (next..next + 10).map(|i| ping(i, 500)).collect();
        match spool.append(records, 1) {
            Ok(seq) => accepted.push((seq, next)),
            Err(e) => {
                refused += 1;
                let msg = e.to_string();
                assert!(msg.contains(&spool_dir.display().to_string()), "{msg}");
                assert!(msg.contains("No space left"), "{msg}");
            }
        }
        next += 10;
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "accepted {accepted:?}, refused {refused}"
    );
    // Room again: the next batches are taken.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    for _ in 0..3 {
        let records: Vec<_> = (next..next + 10).map(|i| ping(i, 500)).collect();
        accepted.push((
            spool.append(records, 1).expect("append once there is room"),
            next,
        ));
        next += 10;
    }
    drop(spool);

    let (spool, recovery) = Spool::open(&spool_dir, limits).unwrap();
    let mut after = 0;
    let mut read = Vec::new();
    while let Some((seq, batch)) = spool.read_after(after).unwrap() {
        let Some(record::Kind::Ping(first)) = &batch.records[0].kind else {
            panic!("not a ping")
        };
        read.push((seq, first.target[1..].parse::<usize>().unwrap()));
        after = seq;
    }
    assert_eq!(
        read, accepted,
        "batches after restart (recovery: {recovery:?})"
    );
    // Numbers were not skipped for refused batches.
    let seqs: Vec<u64> = read.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// kill -9 of the collector every 10 s during ingest, ten times: every
/// result stored exactly once, and ingest went on between every two kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_every_10s_ten_times_during_ingest() {
    let world = World::new();
    world.collector_config("");
    let mut collector = world.start_collector(&[]).await;
    let agent = Arc::new(Agent::start(&world, "k9", FAST));
    let stop = CancellationToken::new();
    let feeder = feed(agent.clone(), stop.clone());
    let mut stored = vec![];
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        collector.kill9();
        stored.push(delivered(&world).per_target.len());
        collector = world.start_collector(&[]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = finish(&world, agent, stop, feeder).await;
    eprintln!("{n} results fed; stored at each kill: {stored:?}");
    assert!(
        stored.windows(2).all(|w| w[1] > w[0]),
        "ingest stalled between kills: {stored:?}"
    );
    let d = delivered(&world);
    assert_exactly_once(&d, n);
    assert_eq!(d.gap_dropped, 0);
}

/// Sixteen agents at once, so the collector commits their batches in
/// shared transactions (group commit), and the collector is killed five
/// times while such commits are in flight: every batch is either
/// acknowledged and stored once, or not acknowledged and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_during_group_commits_of_many_agents() {
    const AGENTS: usize = 16;
    let world = World::new();
    world.collector_config("");
    // Each ingest-log transaction held open 20 ms (a slow disk; a
    // debug-build fault hook): the agents' batches queue behind it and
    // share the next one, which the kills below cut short.
    let slow = [("SONDE_COLLECTOR_TEST_SLOW_COMMIT_MS", "20")];
    let mut collector = world.start_collector(&slow).await;
    let stop = CancellationToken::new();
    let mut fleet = Vec::new();
    for a in 0..AGENTS {
        let agent = Arc::new(Agent::start(&world, &format!("g{a}"), FAST));
        let feeder = feed_from(agent.clone(), a * 10_000_000, stop.clone());
        fleet.push((agent, feeder));
    }
    for round in 0..5 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if round == 0 {
            // Shared transactions are happening: fewer commits than
            // appends.
            let text = world.collector_metrics().await;
            let metric = |n: &str| sonde_tests::prom_value(&text, n).unwrap();
            let (appends, commits) = (
                metric("sonde_collector_log_appends_total"),
                metric("sonde_collector_log_commits_total"),
            );
            eprintln!("before the first kill: {appends} appends in {commits} commits");
            assert!(commits > 0.0 && commits < appends, "{text}");
        }
        collector.kill9();
        collector = world.start_collector(&slow).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let mut n = 0;
    let mut agents = Vec::new();
    for (agent, feeder) in fleet {
        n += feeder.await.unwrap();
        agents.push(agent);
    }
    eventually(
        &format!("all {n} results stored"),
        Duration::from_secs(90),
        || async { (delivered(&world).per_target.len() >= n).then_some(()) },
    )
    .await;
    for agent in agents {
        Arc::try_unwrap(agent)
            .ok()
            .expect("feeder done")
            .stop()
            .await;
    }
    let d = delivered(&world);
    assert_exactly_once(&d, n);
    assert_eq!(d.gap_dropped, 0);
}

/// The collector's disk fills up: it stops acknowledging and says why (in
/// its log and to the agent), the agent keeps its batches in its spool, and
/// when there is room again everything arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_disk_full_stops_acknowledging_and_recovers() {
    let world = World::new();
    let disk = Tmpfs::mount(&world.dir().join("collector-state"), "64m");
    world.collector_config("");
    let mut collector = world.start_collector(&[]).await;
    let agent = Arc::new(Agent::start(&world, "full", FAST));
    let stop = CancellationToken::new();
    let feeder = feed(agent.clone(), stop.clone());
    eventually("results stored", Duration::from_secs(20), || async {
        (delivered(&world).per_target.len() >= 500).then_some(())
    })
    .await;

    disk.fill("filler");
    collector
        .wait_log(
            &["collector disk is full: batches are not acknowledged"],
            Duration::from_secs(20),
        )
        .await;
    let during = delivered(&world).per_target.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = delivered(&world).per_target.len();
    assert!(
        still <= during + 100,
        "stored {during} then {still} on a full disk"
    );
    assert!(collector.running(), "the collector exited on a full disk");

    // The agent backs off instead of coming straight back (the collector
    // cannot record the session, so no Welcome: 1 s at most here; refusals
    // are logged once a session).
    let refusals = collector
        .log_text()
        .matches("collector disk is full: batches are not acknowledged")
        .count();
    assert!(refusals <= 15, "{refusals} refused sessions in about 6 s");
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let n = finish(&world, agent, stop, feeder).await;
    let d = delivered(&world);
    assert_exactly_once(&d, n);
    assert_eq!(d.gap_dropped, 0);
    // After the disk was freed the collector still serves and stores.
    assert!(
        world
            .collector_metric("sonde_collector_ingest_batches_total")
            .await
            > 0.0
    );
}

/// The agent's spool on a tiny disk that fills up: the agent keeps probing
/// and heartbeating, does not crash, and a gap record accounts for every
/// result it could not keep, once there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_spool_disk_full_sends_a_gap_and_keeps_running() {
    let world = World::new();
    world.collector_config("[heartbeat]\ninterval = \"500ms\"\ngrace = \"2s\"\n");
    let _collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "tiny");
    world.agent_config(
        "tiny",
        &cert,
        "[[ping]]\ntargets = [\"127.0.8.1\"]\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
         [batch]\nmax-delay = \"100ms\"\n[ports]\nenabled = false\n[metrics]\nenabled = false\n",
    );
    let disk = Tmpfs::mount(&world.dir().join("agent-tiny-state").join("spool"), "256k");
    let mut agent = world.start_agent("tiny", &[]);
    eventually("results stored", Duration::from_secs(20), || async {
        (probe_times(&world).per.get("127.0.8.1").map_or(0, Vec::len) >= 10).then_some(())
    })
    .await;

    disk.fill("filler");
    let full = unix_nanos();
    agent
        .wait_log(&["cannot spool a batch"], Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(agent.running(), "the agent exited on a full spool disk");
    // Its session went on (an acknowledgement it cannot write is no reason
    // to drop it).
    let log = agent.log_text();
    assert!(
        !log.contains("collector session lost"),
        "session dropped on a full spool disk:\n{log}"
    );
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let freed = unix_nanos();
    eventually(
        "results after the disk was freed",
        Duration::from_secs(20),
        || async {
            let t = probe_times(&world);
            (t.per["127.0.8.1"]
                .last()
                .is_some_and(|l| *l > freed + 2 * SECOND)
                && t.gap_dropped > 0)
                .then_some(())
        },
    )
    .await;
    agent.terminate();

    let t = probe_times(&world);
    assert_eq!(t.repeats, 0);
    // Every probe slot is either a stored result or counted in the gap:
    // the hole in the 200 ms series is exactly as long as the gap says.
    let times = &t.per["127.0.8.1"];
    let holes: i64 = times
        .windows(2)
        .map(|w| (w[1] - w[0] + SECOND / 10) / (SECOND / 5) - 1)
        .filter(|missing| *missing > 0)
        .sum();
    eprintln!(
        "disk full for {} ms: {holes} probe slots missing, gap says {}",
        (freed - full) / 1_000_000,
        t.gap_dropped
    );
    assert_eq!(
        u64::try_from(holes).unwrap(),
        t.gap_dropped,
        "missing results vs gap record"
    );
    assert!(
        holes >= 5 * 5,
        "the full disk lasted 5 s at 5 probes/s, {holes} missing"
    );
    // Heartbeats went on: the collector never saw the agent go missing.
    let admin = world.api(Some(&world.cert("acme", Role::Admin, "ops")));
    let events = admin.ok("/api/v1/events").await;
    assert!(
        !events.to_string().contains("agent-missing"),
        "heartbeats stopped while the spool was full: {events}"
    );
}

/// Starts the collector listening on `addr` (a veth address of the test's
/// own) instead of loopback.
async fn start_collector_on(world: &World, addr: &str) -> Proc {
    let path = world.collector_config("");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "listen = \"127.0.0.1:",
        &format!("listen = \"{addr}:"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    world.start_collector(&[]).await
}

/// Starts agent `cut` inside namespace `ns`, reaching the collector at
/// `collector` and pinging its own loopback and `collector` every second.
fn start_agent_in(world: &World, ns: &str, collector: &str) -> Proc {
    let cert = world.cert("acme", Role::Agent, "cut");
    let path = world.agent_config(
        "cut",
        &cert,
        &format!("[[ping]]\ntargets = [\"127.0.0.1\", \"{collector}\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n"),
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "collector = \"localhost:",
        &format!("server-name = \"localhost\"\ncollector = \"{collector}:"),
    );
    std::fs::write(&path, text).unwrap();
    let agent = bin("sonde-agent");
    let args = [
        "netns",
        "exec",
        ns,
        agent.to_str().unwrap(),
        "--config",
        path.to_str().unwrap(),
        "--log",
        "stderr",
    ];
    Proc::spawn(
        Path::new("ip"),
        &args,
        &[],
        world.dir().join("agent-cut.log"),
    )
}

/// The agent's network namespace is cut off from the collector for two
/// minutes (nftables drops everything but loopback): it keeps probing and
/// spooling, and afterwards every probe result of the whole time, the two
/// minutes included, is stored exactly once: one per target per second, no
/// hole, no repeat, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_cut_off_for_two_minutes_delivers_everything_once() {
    let world = World::new();
    let mut lab = Lab::new("cut");
    let ns = lab.host("agent");
    lab.link_root(&ns, "198.18.86.2/30", "198.18.86.1/30");
    let _collector = start_collector_on(&world, "198.18.86.1").await;
    let mut agent = start_agent_in(&world, &ns, "198.18.86.1");
    let started = unix_nanos();
    eventually(
        "both targets reporting",
        Duration::from_secs(20),
        || async {
            let t = probe_times(&world);
            (t.per.len() == 2 && t.per.values().all(|v| v.len() >= 3)).then_some(())
        },
    )
    .await;

    lab.nft(
        &ns,
        "table inet cut {\n\
           chain in { type filter hook input priority 0; policy drop; iifname \"lo\" accept; }\n\
           chain out { type filter hook output priority 0; policy drop; oifname \"lo\" accept; }\n\
         }\n",
    );
    let cut = unix_nanos();
    let before = probe_times(&world)
        .per
        .values()
        .map(Vec::len)
        .sum::<usize>();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let during = probe_times(&world)
        .per
        .values()
        .map(Vec::len)
        .sum::<usize>();
    assert!(
        during <= before + 4,
        "results arrived through the cut: {before} then {during}"
    );
    lab.nft(&ns, "");
    let restored = unix_nanos();
    eventually(
        "the two minutes replayed",
        Duration::from_secs(60),
        || async {
            let t = probe_times(&world);
            t.per
                .values()
                .all(|v| v.last().is_some_and(|l| *l > restored + 3 * SECOND))
                .then_some(())
        },
    )
    .await;
    agent.terminate();

    let t = probe_times(&world);
    assert_eq!(t.repeats, 0, "results stored twice");
    assert_eq!(t.gap_dropped, 0, "results dropped");
    contiguous(&t.per, started + 2 * SECOND, restored + 3 * SECOND).unwrap();
    let in_cut = |v: &Vec<i64>| v.iter().filter(|s| (cut..restored).contains(*s)).count();
    let (local, far) = (in_cut(&t.per["127.0.0.1"]), in_cut(&t.per["198.18.86.1"]));
    eprintln!(
        "cut {} s: {local} + {far} results of the cut delivered once; {} pings unanswered",
        (restored - cut) / SECOND,
        t.failed
    );
    assert!(
        local >= 119 && far >= 119,
        "{local} and {far} results in 120 s"
    );
    // The host side did not answer while cut off.
    assert!(t.failed >= 115, "{} unanswered pings", t.failed);
}

/// libfaketime, which makes the agent's system clock read whatever offset
/// the test writes into a file (its monotonic clock stays true, as with a
/// real clock step).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The agent's system clock jumps back 3 minutes, then forward an hour:
/// its results keep their times. One TCP connect a second, filed at the
/// true time, in order, no hole and no repeat across both jumps, nothing
/// dated 3 minutes back or an hour ahead; the agent logs each step.
/// (TCP rather than ICMP: under libfaketime the kernel's receive
/// timestamps would not jump with the agent's clock, as they would with a
/// real step, and ping round trips would be nonsense.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_clock_jumps_do_not_misdate_or_reorder_results() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime (scripts/test.sh does)"
    );
    let world = World::new();
    world.collector_config("");
    let _collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "jumpy");
    let target = format!("127.0.0.1:{}", world.health_port);
    world.agent_config(
        "jumpy",
        &cert,
        &format!(
            "[[tcp]]\ntargets = [\"{target}\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
             [ports]\nenabled = false\n[metrics]\nenabled = false\n"
        ),
    );
    let offset = world.dir().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut agent = world.start_agent(
        "jumpy",
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let started = unix_nanos();
    eventually("results arriving", Duration::from_secs(20), || async {
        (probe_times(&world).per.get(&target).map_or(0, Vec::len) >= 3).then_some(())
    })
    .await;
    std::fs::write(&offset, "-180\n").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    std::fs::write(&offset, "+3600\n").unwrap();
    let jumped = unix_nanos();
    eventually(
        "results after the jumps",
        Duration::from_secs(20),
        || async {
            probe_times(&world).per[&target]
                .last()
                .is_some_and(|l| *l > jumped + 4 * SECOND)
                .then_some(())
        },
    )
    .await;
    let ended = unix_nanos();
    agent
        .wait_log(&["system clock stepped"], Duration::from_secs(5))
        .await;
    agent.terminate();
    let steps = agent.log_text().matches("system clock stepped").count();
    assert!(steps >= 2, "{steps} clock steps logged");

    let t = probe_times(&world);
    assert_eq!((t.repeats, t.failed, t.gap_dropped), (0, 0, 0));
    let times = &t.per[&target];
    let outside: Vec<_> = times
        .iter()
        .filter(|s| !(started - SECOND..=ended + SECOND).contains(*s))
        .collect();
    assert!(
        outside.is_empty(),
        "results dated outside the run: {outside:?}"
    );
    contiguous(&t.per, started + 2 * SECOND, jumped + 4 * SECOND).unwrap();
}
