//! Heartbeats end to end: a stopped agent is marked missing within
//! grace + one interval, back within one interval of restarting, the events
//! survive a collector `kill -9`, an agent reconnects by itself when the
//! collector comes back, and a collector down for 30 s pages no healthy
//! agent missing after its start, while one killed meanwhile is declared
//! missing grace + `restart-grace` after it and paged once.

use std::time::Duration;

use sonde_proto::Role;
use sonde_tests::receivers::Discord;
use sonde_tests::{World, event_kinds, eventually, now_ms};

const INTERVAL_MS: i64 = 1000;
const GRACE_MS: i64 = 3 * INTERVAL_MS;

fn event<'a>(events: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    events
        .iter()
        .rev()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_within_grace_back_on_restart_and_durable() {
    let world = World::new();
    world.collector_config("");
    let mut collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "edge1");
    world.agent_config("edge1", &cert, "[heartbeat]\ninterval = \"1s\"\n");
    let viewer = world.api(Some(&world.cert("acme", Role::Viewer, "v")));

    let mut agent = world.start_agent("edge1", &[]);
    let up = eventually(
        "agent up with two heartbeats",
        Duration::from_secs(20),
        || async {
            viewer
                .agent("acme", "edge1")
                .await
                .filter(|a| a["state"] == "up" && a["last_heartbeat_seq"].as_i64() >= Some(2))
        },
    )
    .await;
    assert_eq!(up["heartbeat_interval_ms"], INTERVAL_MS);
    assert_eq!(up["grace_ms"], GRACE_MS, "default grace is 3 x interval");

    // Stop the agent cleanly; it must exit 0 and be marked missing in time.
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
    let missing = eventually("agent missing", Duration::from_secs(15), || async {
        viewer
            .agent("acme", "edge1")
            .await
            .filter(|a| a["state"] == "missing")
    })
    .await;
    assert_eq!(missing["connected"], false);
    let events = viewer.events().await;
    let last_heartbeat = missing["last_heartbeat_ms"].as_i64().unwrap();
    let missing_at = event(&events, "agent-missing")["at_ms"].as_i64().unwrap();
    let silence = missing_at - last_heartbeat;
    assert!(
        (GRACE_MS - 50..=GRACE_MS + INTERVAL_MS).contains(&silence),
        "marked missing {silence} ms after the last heartbeat; want grace {GRACE_MS} ms + at most one interval"
    );

    // Restart: back within one interval of starting.
    let started = now_ms();
    let _agent = world.start_agent("edge1", &[]);
    eventually("agent back", Duration::from_secs(15), || async {
        viewer
            .agent("acme", "edge1")
            .await
            .filter(|a| a["state"] == "up")
    })
    .await;
    let events = viewer.events().await;
    let back_at = event(&events, "agent-back")["at_ms"].as_i64().unwrap();
    assert!(
        back_at - started <= INTERVAL_MS,
        "back {} ms after restart; want at most one interval ({INTERVAL_MS} ms)",
        back_at - started
    );

    // kill -9 the collector: every event is still there after restart.
    collector.kill9();
    let _collector = world.start_collector(&[]).await;
    let after = event_kinds(&viewer.events().await);
    let edge = |k: &str| ("edge1".to_owned(), k.to_owned());
    assert_eq!(
        after,
        vec![
            edge("agent-registered"),
            edge("agent-missing"),
            edge("agent-back")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reconnects_after_collector_is_killed_and_restarted() {
    let world = World::new();
    world.collector_config("");
    let mut collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "edge2");
    world.agent_config("edge2", &cert, "[heartbeat]\ninterval = \"200ms\"\n");
    let viewer = world.api(Some(&world.cert("acme", Role::Viewer, "v")));
    let agent = world.start_agent("edge2", &[]);

    let seq_before = eventually("heartbeats flowing", Duration::from_secs(20), || async {
        let a = viewer.agent("acme", "edge2").await?;
        a["last_heartbeat_seq"].as_i64().filter(|s| *s >= 3)
    })
    .await;

    collector.kill9();
    agent
        .wait_log(
            &["collector session lost", "retry_in"],
            Duration::from_secs(15),
        )
        .await;
    let _collector = world.start_collector(&[]).await;

    let a = eventually(
        "heartbeats resumed after restart",
        Duration::from_secs(20),
        || async {
            viewer.agent("acme", "edge2").await.filter(|a| {
                a["connected"] == true && a["last_heartbeat_seq"].as_i64() > Some(seq_before + 2)
            })
        },
    )
    .await;
    assert_eq!(a["state"], "up");
    // One process, two sessions: the log shows two connections.
    assert!(
        agent.log_text().matches(" connected ").count() >= 2,
        "{}",
        agent.log_text()
    );
}

/// The collector stopped for 30 s while two agents (2 s heartbeat, so a
/// 6 s grace; reconnect backoff up to 30 s) keep trying. After its start
/// neither healthy agent is declared missing, though each may take its
/// whole backoff to come back; one killed while the collector was down is
/// declared missing within grace + `restart-grace` of the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restart_declares_no_healthy_agent_missing() {
    const RESTART_GRACE_MS: i64 = 35_000;
    const GRACE_MS: i64 = 6_000;
    let world = World::new();
    // A receiver, to see that nothing pages for the healthy agent.
    let discord = Discord::start("127.0.0.1:0".parse().unwrap()).await;
    world.collector_config(&format!(
        "[heartbeat]\nrestart-grace = \"35s\"\n\
         [[alerting.route]]\ntenant = \"acme\"\nreceiver = \"ops\"\n\
         group-wait = \"1s\"\ngroup-interval = \"1s\"\n\
         [[alerting.receiver]]\nname = \"ops\"\n[alerting.receiver.discord]\nurl = \"{}\"\n",
        discord.url()
    ));
    let mut collector = world.start_collector(&[]).await;
    let viewer = world.api(Some(&world.cert("acme", Role::Viewer, "v")));
    let mut agents = Vec::new();
    for name in ["steady", "doomed"] {
        let cert = world.cert("acme", Role::Agent, name);
        let config = world.agent_config(name, &cert, "[heartbeat]\ninterval = \"2s\"\n");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace("max = \"1s\"", "max = \"30s\"");
        assert!(text.contains("max = \"30s\""), "{text}");
        std::fs::write(&config, text).unwrap();
        agents.push(world.start_agent(name, &[]));
    }
    for name in ["steady", "doomed"] {
        eventually(name, Duration::from_secs(20), || async {
            viewer
                .agent("acme", name)
                .await
                .filter(|a| a["connected"] == true)
        })
        .await;
    }
    collector.terminate();
    agents[1].kill9();
    // The outage itself: 30 s without a collector.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let started = now_ms();
    let _collector = world.start_collector(&[]).await;
    eventually("steady back", Duration::from_secs(40), || async {
        viewer
            .agent("acme", "steady")
            .await
            .filter(|a| a["connected"] == true)
    })
    .await;
    let missing_at = eventually(
        "doomed declared missing",
        Duration::from_secs(50),
        || async {
            let events = viewer.events().await;
            events
                .iter()
                .find(|e| e["kind"] == "agent-missing" && e["agent"] == "doomed")
                .and_then(|e| e["at_ms"].as_i64())
        },
    )
    .await;
    let after = missing_at - started;
    assert!(
        (GRACE_MS + RESTART_GRACE_MS - 1_000..=GRACE_MS + RESTART_GRACE_MS + 2_000)
            .contains(&after),
        "doomed declared missing {after} ms after the start; want grace + restart-grace"
    );
    let events = viewer.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "agent-missing" && e["agent"] == "steady"),
        "a healthy agent was declared missing: {events:?}"
    );
    // Paged once, for the agent that is gone, and never for the other.
    eventually("doomed paged", Duration::from_secs(20), || async {
        discord
            .delivered()
            .iter()
            .any(|t| t.contains("doomed"))
            .then_some(())
    })
    .await;
    // Longer than group-wait + group-interval and an alerting poll.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let titles = discord.delivered();
    assert_eq!(titles.len(), 1, "{titles:?}");
    assert!(titles[0].starts_with("[FIRING:1]"), "{titles:?}");
    assert!(!titles[0].contains("steady"), "{titles:?}");
}
