//! SIGHUP reloads: the agent picks up a rotated certificate and a new
//! heartbeat interval by reconnecting (the collector never sees it go
//! missing, and no probe result is lost or repeated), keeps running on a broken new config, and follows a heartbeat
//! interval the collector imposes after its own reload (`ConfigUpdate`).

use std::time::Duration;

use nix::sys::signal::Signal;
use sonde_proto::Role;
use sonde_runtime::clock::unix_nanos;
use sonde_tests::ledger::{SECOND, contiguous, probe_times};
use sonde_tests::{World, eventually};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reload_rotates_certificate_and_interval_without_going_missing() {
    let world = World::new();
    world.collector_config("");
    let _collector = world.start_collector(&[]).await;
    let viewer = world.api(Some(&world.cert("acme", Role::Viewer, "v")));
    let cert = world.cert("acme", Role::Agent, "rot");
    // It probes throughout: the rotation must not lose or repeat a result.
    let probes = "[[ping]]\ntargets = [\"127.0.9.1\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n";
    world.agent_config(
        "rot",
        &cert,
        &format!("[heartbeat]\ninterval = \"300ms\"\n{probes}"),
    );
    let agent = world.start_agent("rot", &[]);
    let started = unix_nanos();
    let first = eventually("agent up", WAIT, || async {
        viewer
            .agent("acme", "rot")
            .await
            .filter(|a| a["connected"] == true)
    })
    .await;
    assert_eq!(first["heartbeat_interval_ms"], 300);

    // Rotate: a new key and certificate for the same identity, written over
    // the old files, and a new interval.
    let fresh = world
        .pki
        .ca()
        .issue_client(
            &sonde_proto::Identity::new("acme", Role::Agent, "rot").unwrap(),
            30,
        )
        .unwrap();
    let stem = cert.cert.file_stem().unwrap().to_str().unwrap();
    fresh.write(world.pki.dir(), stem).unwrap();
    world.agent_config(
        "rot",
        &cert,
        &format!("[heartbeat]\ninterval = \"400ms\"\n{probes}"),
    );
    agent.signal(Signal::SIGHUP);
    let rotated = unix_nanos();
    agent.wait_log(&["configuration reloaded"], WAIT).await;
    agent
        .wait_log(&["configuration changed; reconnecting"], WAIT)
        .await;
    let second = eventually("reconnected with the new interval", WAIT, || async {
        viewer
            .agent("acme", "rot")
            .await
            .filter(|a| a["heartbeat_interval_ms"] == 400 && a["connected"] == true)
    })
    .await;
    assert_ne!(
        first["remote_addr"], second["remote_addr"],
        "no new connection"
    );
    assert!(second["last_heartbeat_seq"].as_i64() > first["last_heartbeat_seq"].as_i64());
    // Every probe result across the rotation, once: one a second, no hole.
    let after = eventually("results after the rotation", WAIT, || async {
        let t = probe_times(&world);
        t.per
            .get("127.0.9.1")
            .and_then(|v| v.last())
            .is_some_and(|l| *l > rotated + 3 * SECOND)
            .then_some(t)
    })
    .await;
    assert_eq!((after.repeats, after.failed, after.gap_dropped), (0, 0, 0));
    contiguous(&after.per, started + 2 * SECOND, rotated + 3 * SECOND).unwrap();

    // A broken config on SIGHUP is refused; the agent keeps heartbeating.
    std::fs::write(world.dir().join("agent-rot.toml"), "collector = 7\n").unwrap();
    agent.signal(Signal::SIGHUP);
    agent
        .wait_log(&["reload refused; keeping the running configuration"], WAIT)
        .await;
    let seq = second["last_heartbeat_seq"].as_i64().unwrap();
    eventually(
        "heartbeats continue after a failed reload",
        WAIT,
        || async {
            let a = viewer.agent("acme", "rot").await?;
            (a["last_heartbeat_seq"].as_i64()? > seq + 3).then_some(())
        },
    )
    .await;

    let kinds: Vec<String> = viewer
        .events()
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec!["agent-registered"],
        "rotation must not look like an outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_reload_pushes_a_new_heartbeat_interval() {
    let world = World::new();
    world.collector_config("");
    let collector = world.start_collector(&[]).await;
    let viewer = world.api(Some(&world.cert("acme", Role::Viewer, "v")));
    let cert = world.cert("acme", Role::Agent, "pushed");
    world.agent_config("pushed", &cert, "[heartbeat]\ninterval = \"2s\"\n");
    let agent = world.start_agent("pushed", &[]);
    eventually("agent up", WAIT, || async {
        viewer
            .agent("acme", "pushed")
            .await
            .filter(|a| a["connected"] == true)
    })
    .await;

    world.collector_config("[heartbeat]\ninterval = \"200ms\"\n");
    collector.signal(Signal::SIGHUP);
    collector.wait_log(&["configuration reloaded"], WAIT).await;
    agent
        .wait_log(&["collector changed the heartbeat interval", "200ms"], WAIT)
        .await;
    // At 200 ms, ten more heartbeats arrive in about two seconds (at the
    // old 2 s interval they would take twenty).
    let start = viewer.agent("acme", "pushed").await.unwrap()["last_heartbeat_seq"]
        .as_i64()
        .unwrap();
    let a = eventually("fast heartbeats", Duration::from_secs(8), || async {
        let a = viewer.agent("acme", "pushed").await?;
        (a["last_heartbeat_seq"].as_i64()? >= start + 10).then_some(a)
    })
    .await;
    // The store (and so the API and the restart snapshot) follows.
    assert_eq!(
        (a["heartbeat_interval_ms"].as_i64(), a["grace_ms"].as_i64()),
        (Some(200), Some(600))
    );
}
