//! The systemd notification protocol, seen from a test-owned
//! `NOTIFY_SOCKET`: READY=1 once initialised, WATCHDOG=1 repeatedly when
//! `WATCHDOG_USEC` is set, RELOADING=1 then READY=1 around SIGHUP, and
//! STOPPING=1 on SIGTERM — for both daemons.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sonde_proto::Role;
use sonde_tests::{Proc, World};
use tokio::net::UnixDatagram;

/// Receives datagrams into `seen` until `done(seen)` holds; panics naming
/// `what` after 20 s.
async fn recv_until(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {what} within 20 s; got {seen:?}"))
            .expect("recv");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

fn has(m: &str, line: &str) -> bool {
    m.lines().any(|l| l == line)
}

fn index_of(seen: &[String], line: &str) -> Option<usize> {
    seen.iter().position(|m| has(m, line))
}

/// Checks the whole protocol; `seen` holds datagrams already received.
async fn check_protocol(mut proc: Proc, sock: UnixDatagram, mut seen: Vec<String>) {
    recv_until(&sock, &mut seen, "READY=1", |s| {
        index_of(s, "READY=1").is_some()
    })
    .await;
    let ready = index_of(&seen, "READY=1").unwrap();
    assert!(
        seen[..ready].iter().all(|m| !has(m, "WATCHDOG=1")),
        "watchdog before READY: {seen:?}"
    );
    // WATCHDOG_USEC=400ms: a ping every 200 ms. Wait for three after READY.
    recv_until(&sock, &mut seen, "3 x WATCHDOG=1", |s| {
        s[ready..].iter().filter(|m| has(m, "WATCHDOG=1")).count() >= 3
    })
    .await;

    proc.signal(Signal::SIGHUP);
    recv_until(&sock, &mut seen, "RELOADING=1", |s| {
        index_of(s, "RELOADING=1").is_some()
    })
    .await;
    let reloading = index_of(&seen, "RELOADING=1").unwrap();
    assert!(
        seen[reloading].contains("MONOTONIC_USEC="),
        "RELOADING=1 without MONOTONIC_USEC: {}",
        seen[reloading]
    );
    recv_until(&sock, &mut seen, "READY=1 after RELOADING=1", |s| {
        s[reloading + 1..].iter().any(|m| has(m, "READY=1"))
    })
    .await;

    proc.signal(Signal::SIGTERM);
    recv_until(&sock, &mut seen, "STOPPING=1", |s| {
        index_of(s, "STOPPING=1").is_some()
    })
    .await;
    let status = proc
        .wait_exit(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=")),
        "no STATUS= line: {seen:?}"
    );
}

fn notify_socket(world: &World, name: &str) -> (UnixDatagram, String) {
    let path = world.dir().join(format!("{name}.notify"));
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    (sock, path.to_str().expect("utf-8").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_speaks_sd_notify() {
    let world = World::new();
    world.collector_config("");
    let (sock, path) = notify_socket(&world, "collector");
    let env = [
        ("NOTIFY_SOCKET", path.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let collector = world.start_collector(&env).await;
    check_protocol(collector, sock, Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_speaks_sd_notify_and_reports_connection_state() {
    let world = World::new();
    world.collector_config("");
    let _collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "notified");
    world.agent_config("notified", &cert, "[heartbeat]\ninterval = \"200ms\"\n");
    let (sock, path) = notify_socket(&world, "agent");
    let env = [
        ("NOTIFY_SOCKET", path.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let agent = world.start_agent("notified", &env);
    let mut seen = Vec::new();
    recv_until(&sock, &mut seen, "a connected STATUS", |s| {
        s.iter()
            .any(|m| m.contains("STATUS=connected to localhost:"))
    })
    .await;
    check_protocol(agent, sock, seen).await;
}
