//! Probes across network namespaces the tests build: loss and outage made
//! with nftables, traceroute through a chain of router namespaces and a
//! route change, TCP outcomes (open, refused, SYN dropped, no route). The
//! probes run as `sonde-agent probe-once` inside the agent's namespace, so
//! the real binary, config parsing and sockets are under test, in both
//! ICMP socket modes (raw, and unprivileged datagram once the namespace's
//! `ping_group_range` allows it).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use sonde_proto::Role;
use sonde_tests::netns::Lab;
use sonde_tests::{World, bin};

/// Runs `probe-once` with `tables` in `ns`; returns (exit code, stdout).
fn probe_once(world: &World, lab: &Lab, ns: &str, tables: &str) -> (i32, String, Output) {
    let cert = world.cert("acme", Role::Agent, "a1");
    let config = world.agent_config("a1", &cert, tables);
    let out = lab.exec(
        ns,
        &bin("sonde-agent"),
        &["probe-once", "--config", config.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout, out)
}

/// Runs `probe-once` with `tables` here (the test's own namespace, on
/// loopback); returns (stdout, the whole output).
fn probe_once_here(world: &World, tables: &str) -> (String, Output) {
    let cert = world.cert("acme", Role::Agent, "a1");
    let config = world.agent_config("a1", &cert, tables);
    let out = std::process::Command::new(bin("sonde-agent"))
        .args(["probe-once", "--config", config.to_str().unwrap()])
        .output()
        .expect("run sonde-agent probe-once");
    (String::from_utf8_lossy(&out.stdout).into_owned(), out)
}

/// Counts the status word of each `ping` line.
fn ping_outcomes(stdout: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("ping ")) {
        let status = line.split_whitespace().nth(3).unwrap_or("?").to_owned();
        *counts.entry(status).or_default() += 1;
    }
    counts
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An nftables ruleset dropping what `matches` on input.
fn drop_rule(matches: &str) -> String {
    format!(
        "table inet test {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    {matches} drop\n  }}\n}}\n"
    )
}

/// Agent namespace `a` and a target namespace `t` on one link; every
/// address of 10.77.2.0/23 answers in `t`.
fn two_hosts(lab: &mut Lab) -> (String, String) {
    let a = lab.host("a");
    let t = lab.host("t");
    lab.link(&a, "10.77.1.1/24", &t, "10.77.1.2/24");
    lab.ip(&t, &["route", "add", "local", "10.77.2.0/23", "dev", "lo"]);
    lab.ip(&a, &["route", "add", "10.77.2.0/23", "via", "10.77.1.2"]);
    (a, t)
}

/// 508 probes: two /24 ranges (so ±10 % is five standard deviations).
const PING_RANGE: &str =
    "[[ping]]\ntargets = [\"10.77.2.0/24\", \"10.77.3.0/24\"]\ntimeout = \"1s\"\n";
const PROBES: usize = 508;

#[test]
fn nftables_loss_and_outage_show_as_loss_in_both_socket_modes() {
    let world = World::new();
    let mut lab = Lab::new("loss");
    let (a, t) = two_hosts(&mut lab);

    // No rule: every one of 508 addresses answers (raw socket mode: a new
    // namespace's ping_group_range admits no group).
    let (code, out, raw) = probe_once(&world, &lab, &a, PING_RANGE);
    assert_eq!(ping_outcomes(&out).get("ok"), Some(&PROBES), "{out}");
    assert_eq!(code, 0, "{}", stderr(&raw));
    assert!(
        stderr(&raw).contains("raw (CAP_NET_RAW)"),
        "{}",
        stderr(&raw)
    );

    // 30 % of echo requests dropped at random in the target.
    lab.nft(
        &t,
        &drop_rule("icmp type echo-request numgen random mod 100 < 30"),
    );
    for mode in ["raw", "datagram"] {
        if mode == "datagram" {
            lab.sysctl(&a, "net.ipv4.ping_group_range", "0 2147483647");
        }
        let (code, out, o) = probe_once(&world, &lab, &a, PING_RANGE);
        let outcomes = ping_outcomes(&out);
        let lost = outcomes.get("timeout").copied().unwrap_or(0);
        let ok = outcomes.get("ok").copied().unwrap_or(0);
        assert_eq!(lost + ok, PROBES, "{mode}: {outcomes:?}");
        #[allow(clippy::cast_precision_loss)]
        let ratio = lost as f64 / PROBES as f64;
        eprintln!("{mode}: {lost}/{PROBES} lost ({:.1} %)", ratio * 100.0);
        assert!((0.20..=0.40).contains(&ratio), "{mode}: loss {ratio}");
        assert_eq!(code, 1, "a lossy run exits 1");
        if mode == "datagram" {
            assert!(
                stderr(&o).contains("unprivileged datagram"),
                "{}",
                stderr(&o)
            );
        }
    }

    // Everything dropped: 100 % loss, each probe a timeout.
    lab.nft(&t, &drop_rule("icmp type echo-request"));
    let started = Instant::now();
    let (code, out, _) = probe_once(&world, &lab, &a, PING_RANGE);
    assert_eq!(
        ping_outcomes(&out),
        BTreeMap::from([("timeout".into(), PROBES)])
    );
    assert_eq!(code, 1);
    // Timeouts are waited out once, concurrently: not 508 x 1 s.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The trace lines of `stdout`: (header, hop addresses).
fn traces(stdout: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("trace ") {
            out.push((line.to_owned(), Vec::new()));
        } else if let Some(hop) = line.strip_prefix("  ") {
            let mut words = hop.split_whitespace();
            let (_ttl, addr) = (words.next(), words.next().unwrap_or("-"));
            // Every hop that answered has 3 RTTs.
            if addr != "-" {
                assert_eq!(words.count(), 3, "{line}");
            }
            out.last_mut()
                .expect("hop after header")
                .1
                .push(addr.to_owned());
        }
    }
    out
}

fn path_of(header: &str) -> String {
    header
        .split_whitespace()
        .find_map(|w| w.strip_prefix("path="))
        .expect("path=")
        .to_owned()
}

#[test]
fn traceroute_through_routers_sees_each_hop_and_a_route_change() {
    let world = World::new();
    let mut lab = Lab::new("trace");
    let a = lab.host("a");
    let r1 = lab.host("r1");
    let r2 = lab.host("r2");
    let r3 = lab.host("r3");
    let t = lab.host("t");
    lab.link(&a, "10.77.0.1/30", &r1, "10.77.0.2/30");
    lab.link(&r1, "10.77.0.5/30", &r2, "10.77.0.6/30");
    lab.link(&r2, "10.77.0.9/30", &t, "10.77.0.10/30");
    lab.link(&r1, "10.77.0.13/30", &r3, "10.77.0.14/30");
    lab.link(&r3, "10.77.0.17/30", &r2, "10.77.0.18/30");
    lab.ip(&a, &["route", "add", "default", "via", "10.77.0.2"]);
    lab.ip(&t, &["route", "add", "default", "via", "10.77.0.9"]);
    lab.ip(&r1, &["route", "add", "10.77.0.8/30", "via", "10.77.0.6"]);
    lab.ip(&r2, &["route", "add", "10.77.0.0/30", "via", "10.77.0.5"]);
    lab.ip(&r3, &["route", "add", "10.77.0.8/30", "via", "10.77.0.18"]);
    lab.ip(&r3, &["route", "add", "10.77.0.0/30", "via", "10.77.0.13"]);

    let tables = "[[trace]]\ntargets = [\"10.77.0.10\"]\nmethod = \"udp\"\ntimeout = \"1s\"\n\
                  [[trace]]\ntargets = [\"10.77.0.10\"]\nmethod = \"icmp\"\ntimeout = \"1s\"\n";
    let direct = ["10.77.0.2", "10.77.0.6", "10.77.0.10"];
    let mut first: Option<Vec<String>> = None;
    // Raw ICMP sockets, then datagram ones: the same hops, the same hashes.
    for mode in ["raw", "datagram", "raw"] {
        if mode == "datagram" {
            lab.sysctl(&a, "net.ipv4.ping_group_range", "0 2147483647");
        } else {
            lab.sysctl(&a, "net.ipv4.ping_group_range", "1 0");
        }
        let (code, out, o) = probe_once(&world, &lab, &a, tables);
        assert_eq!(code, 0, "{out}\n{}", stderr(&o));
        let found = traces(&out);
        assert_eq!(found.len(), 2, "{out}");
        for (header, hops) in &found {
            assert!(header.contains(" reached hops=3 "), "{header}");
            assert_eq!(hops, &direct, "{mode}: {header}");
        }
        let hashes: Vec<String> = found.iter().map(|(h, _)| path_of(h)).collect();
        assert_eq!(hashes[0], hashes[1], "same path by UDP and ICMP");
        match &first {
            None => first = Some(hashes),
            Some(f) => assert_eq!(f, &hashes, "{mode}: an unchanged path keeps its hash"),
        }
    }

    // r1 now sends the target's traffic through r3.
    lab.ip(
        &r1,
        &["route", "replace", "10.77.0.8/30", "via", "10.77.0.14"],
    );
    let (code, out, o) = probe_once(&world, &lab, &a, tables);
    assert_eq!(code, 0, "{out}\n{}", stderr(&o));
    for (header, hops) in traces(&out) {
        // r2 answers from the address of its route back (towards r1).
        assert_eq!(
            hops,
            ["10.77.0.2", "10.77.0.14", "10.77.0.6", "10.77.0.10"],
            "{header}"
        );
        assert_ne!(
            path_of(&header),
            first.as_ref().unwrap()[0],
            "a new router changes the path hash"
        );
    }
}

#[test]
fn tcp_connect_open_refused_dropped_and_unroutable() {
    let world = World::new();
    // Open and closed ports on loopback.
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (stdout, _) = probe_once_here(
        &world,
        &format!(
            "[[tcp]]\ntargets = [\"127.0.0.1:{open_port}\", \"127.0.0.1:{closed_port}\"]\ntimeout = \"2s\"\n"
        ),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "tcp   127.0.0.1:{open_port} 127.0.0.1:{open_port} ok "
        )),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "tcp   127.0.0.1:{closed_port} 127.0.0.1:{closed_port} refused"
        )),
        "{stdout}"
    );
    drop(open);

    // SYNs dropped in a namespace: a timeout, within the timeout.
    let mut lab = Lab::new("tcp");
    let (a, t) = two_hosts(&mut lab);
    lab.nft(&t, &drop_rule("tcp dport 81 tcp flags syn"));
    let started = Instant::now();
    let (code, out, o) = probe_once(
        &world,
        &lab,
        &a,
        "[[tcp]]\ntargets = [\"10.77.2.9:81\", \"10.77.2.9:82\", \"10.99.0.1:80\"]\ntimeout = \"1500ms\"\n",
    );
    let took = started.elapsed();
    assert_eq!(code, 1, "{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains(" timeout (no answer within 1.5s)"),
        "{out}"
    );
    assert!(lines[1].contains(" refused"), "{out}");
    assert!(lines[2].contains(" unreachable"), "{out}");
    // Connects run concurrently: the whole run is one timeout, not three.
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn every_probe_kind_works_over_ipv6() {
    let world = World::new();
    let open = TcpListener::bind("[::1]:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stdout, out) = probe_once_here(
        &world,
        &format!(
            "[[ping]]\ntargets = [\"::1\"]\n\
             [[tcp]]\ntargets = [\"[::1]:{open_port}\", \"[::1]:{closed_port}\"]\n\
             [[trace]]\ntargets = [\"::1\"]\nmethod = \"udp\"\n\
             [[trace]]\ntargets = [\"::1\"]\nmethod = \"icmp\"\n"
        ),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}{}", stderr(&out));
    assert!(
        lines[0].starts_with("ping  ::1 ::1 ok ") && lines[0].ends_with("ttl=64"),
        "{stdout}"
    );
    assert!(
        lines[1].contains(&format!("[::1]:{open_port} ok ")),
        "{stdout}"
    );
    assert!(
        lines[2].contains(&format!("[::1]:{closed_port} refused")),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("trace ::1 ::1 udp reached hops=1 "),
        "{stdout}"
    );
    assert!(lines[4].starts_with("  1 ::1 "), "{stdout}");
    assert!(
        lines[5].starts_with("trace ::1 ::1 icmp reached hops=1 "),
        "{stdout}"
    );
}
