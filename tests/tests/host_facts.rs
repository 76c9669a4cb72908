//! Host facts end to end: the real `sonde-agent` binary on this host, a
//! real collector, and everything the agent looks at built by the test —
//! public-IP sources on loopback (an HTTP server, a DNS responder, a dead
//! port), listeners run by `socat`, and a namespace behind a veth pair for
//! the remote port check and the interface counters. Nothing leaves
//! loopback and the test's own namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sonde_proto::Role;
use sonde_tests::netns::Lab;
use sonde_tests::{Proc, World, eventually, now_ms};

/// What the local public-IP sources answer.
type Answer = Arc<Mutex<Ipv4Addr>>;

/// An HTTP source: `/ip` is the address as text, `/garbage` an HTML page.
async fn http_source(answer: Answer) -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/ip",
            get(move || {
                let a = *answer.lock().unwrap();
                async move { format!("{a}\n") }
            }),
        )
        .route(
            "/garbage",
            get(|| async { "<html><body>rate limited</body></html>" }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A DNS responder answering every A question with the address.
async fn dns_source(answer: Answer) -> SocketAddr {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::new();
            reply
                .set_id(query.id())
                .set_message_type(MessageType::Response);
            for q in query.queries() {
                reply.add_query(q.clone());
                let a = *answer.lock().unwrap();
                reply.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(a))));
            }
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    addr
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `socat` listening on `addr:port` (in `ns` if given), accepting and
/// dropping connections.
fn socat(world: &World, ns: Option<&str>, addr: &str, port: u16) -> Proc {
    let listen = format!("TCP4-LISTEN:{port},bind={addr},reuseaddr,fork");
    let log = world.dir().join(format!("socat-{port}.log"));
    match ns {
        Some(ns) => Proc::spawn(
            Path::new("ip"),
            &["netns", "exec", ns, "socat", &listen, "/dev/null"],
            &[],
            log,
        ),
        None => Proc::spawn(Path::new("socat"), &[&listen, "/dev/null"], &[], log),
    }
}

/// The agent's entry (`None` until the agent has connected).
async fn detail(api: &sonde_tests::Api) -> Option<Value> {
    let (status, v) = api.get("/api/v1/agents/facts").await.ok()?;
    (status == 200).then_some(v)
}

fn events(v: &Value, kind: &str) -> Vec<Value> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// The listening port `proto address:port` in an agent detail.
fn port<'a>(v: &'a Value, address: &str, port: u16) -> Option<&'a Value> {
    v["ports"]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["protocol"] == "tcp" && p["address"] == address && p["port"] == port)
}

/// `MemTotal` as the kernel says, to compare with the agent's figure.
fn meminfo_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn public_ip_ports_remote_check_and_metrics() {
    let world = World::new();
    world.collector_config("");
    let _collector = world.start_collector(&[]).await;

    // The namespace behind a veth pair: the remote check's far side, and
    // the interface whose counters must move.
    let mut lab = Lab::new("facts");
    let far = lab.host("far");
    let veth = lab.link_root(&far, "198.18.84.2/30", "198.18.84.1/30");

    let old: Ipv4Addr = "203.0.113.7".parse().unwrap();
    let new: Ipv4Addr = "198.51.100.9".parse().unwrap();
    let answer: Answer = Arc::new(Mutex::new(old));
    let http = http_source(answer.clone()).await;
    let dns = dns_source(answer.clone()).await;
    let dead = dead_port();

    let cert = world.cert("acme", Role::Agent, "facts");
    world.agent_config(
        "facts",
        &cert,
        &format!(
            "[public-ip]\ninterval = \"1s\"\ntimeout = \"1s\"\nagree = 2\n\
             [[public-ip.source]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{dead}/ip\"\n\
             [[public-ip.source]]\nkind = \"http\"\nurl = \"http://{http}/garbage\"\n\
             [[public-ip.source]]\nkind = \"http\"\nurl = \"http://{http}/ip\"\n\
             [[public-ip.source]]\nkind = \"dns\"\nserver = \"{dns}\"\nname = \"myip.test\"\nrecord = \"A\"\n\
             [ports]\ninterval = \"1s\"\n\
             [metrics]\ninterval = \"1s\"\n\
             [[remote-check]]\ntargets = [\"198.18.84.2:8020-8024\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\nrate = 50\n"
        ),
    );
    let mut agent = world.start_agent("facts", &[]);
    let api = world.api(Some(&world.cert("acme", Role::Viewer, "v")));

    // Public IP: the dead and the garbage source fail, each with its
    // reason; the other two agree.
    let first = eventually("a public-IP lookup", Duration::from_secs(20), || async {
        let v = detail(&api).await?;
        (v["public_ip"]["ipv4"] == old.to_string()).then_some(v)
    })
    .await;
    let lookup = &first["public_ip"]["lookups"][0];
    assert_eq!(lookup["status"], "ok", "{lookup}");
    let answers = lookup["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 4, "{lookup}");
    let error = |i: usize| answers[i]["error"].as_str().unwrap().to_owned();
    assert!(error(0).contains("Connection refused"), "{}", error(0));
    assert_eq!(
        error(1),
        "not an IP address: \"<html><body>rate limited</body></html>\""
    );
    assert_eq!(
        (
            answers[2]["address"].as_str(),
            answers[3]["address"].as_str()
        ),
        (Some("203.0.113.7"), Some("203.0.113.7"))
    );

    // The sources change their answer: one ip-changed event, old → new.
    *answer.lock().unwrap() = new;
    eventually("the new public IP", Duration::from_secs(20), || async {
        let v = detail(&api).await?;
        (v["public_ip"]["ipv4"] == new.to_string()).then_some(())
    })
    .await;
    let started = now_ms();
    // Three more lookups at the new address change nothing.
    eventually("three more lookups", Duration::from_secs(20), || async {
        let v = detail(&api).await?;
        let at = v["public_ip"]["lookups"][0]["checked_ms"].as_i64()?;
        (at > started + 3_000).then_some(())
    })
    .await;
    let all = api.ok("/api/v1/events?agent=facts&limit=1000").await;
    let changed = events(&all, "ip-changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["detail"]["old"], old.to_string());
    assert_eq!(changed[0]["detail"]["new"], new.to_string());
    assert_eq!(changed[0]["detail"]["family"], "ipv4");
    let v = detail(&api).await.expect("agent entry");
    let history: Vec<&str> = v["public_ip"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["address"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["198.51.100.9", "203.0.113.7"], "newest first");

    // Ports: the collector's own listener is there, on loopback, rated low.
    let v = detail(&api).await.expect("agent entry");
    let own = port(&v, "127.0.0.1", world.port).unwrap_or_else(|| panic!("{}", v["ports"]));
    assert_eq!(
        (
            own["program"].as_str(),
            own["risk"].as_str(),
            own["loopback"].as_bool()
        ),
        (Some("sonde-collector"), Some("low"), Some(true))
    );
    // A telnet port opened on a non-loopback address: reported within one
    // interval (1 s) with its program and a high rating.
    let opened_at = now_ms();
    let mut telnet = socat(&world, None, "198.18.84.1", 23);
    let event = eventually("port-opened", Duration::from_secs(15), || async {
        let all = api.ok("/api/v1/events?agent=facts&limit=1000").await;
        events(&all, "port-opened")
            .into_iter()
            .find(|e| e["detail"]["port"] == 23)
    })
    .await;
    let opened = &event["detail"];
    assert_eq!(
        (
            opened["program"].as_str(),
            opened["service"].as_str(),
            opened["risk"].as_str(),
            opened["address"].as_str(),
            opened["loopback"].as_bool()
        ),
        (
            Some("socat"),
            Some("telnet"),
            Some("high"),
            Some("198.18.84.1"),
            Some(false)
        ),
        "{opened}"
    );
    let delay = event["at_ms"].as_i64().unwrap() - opened_at;
    eprintln!("port-opened {delay} ms after the listener started (interval 1 s)");
    // One interval, plus a second for a loaded machine's scheduling.
    assert!(
        delay <= 2_000,
        "reported {delay} ms after opening; the interval is 1 s"
    );
    telnet.kill9();
    let event = eventually("port-closed", Duration::from_secs(15), || async {
        let all = api.ok("/api/v1/events?agent=facts&limit=1000").await;
        events(&all, "port-closed")
            .into_iter()
            .find(|e| e["detail"]["port"] == 23)
    })
    .await;
    assert_eq!(
        (
            event["detail"]["risk"].as_str(),
            event["detail"]["program"].as_str()
        ),
        (Some("high"), Some("socat"))
    );

    // Remote check: nothing open in the namespace yet, then a listener.
    eventually("a remote-check pass", Duration::from_secs(15), || async {
        let v = detail(&api).await?;
        let r = v["remote_checks"].get(0)?;
        (r["checked"] == 5 && r["open"] == serde_json::json!([])).then_some(())
    })
    .await;
    let mut far_listener = socat(&world, Some(&far), "198.18.84.2", 8022);
    let event = eventually("remote-port-opened", Duration::from_secs(15), || async {
        let all = api.ok("/api/v1/events?agent=facts&limit=1000").await;
        events(&all, "remote-port-opened").pop()
    })
    .await;
    assert_eq!(event["detail"]["ports"], serde_json::json!([8022]));
    assert_eq!(event["detail"]["address"], "198.18.84.2");
    far_listener.kill9();
    let event = eventually("remote-port-closed", Duration::from_secs(15), || async {
        let all = api.ok("/api/v1/events?agent=facts&limit=1000").await;
        events(&all, "remote-port-closed").pop()
    })
    .await;
    assert_eq!(event["detail"]["ports"], serde_json::json!([8022]));

    // Metrics: sane values, compared with the kernel's own where exact.
    let v = detail(&api).await.expect("agent entry");
    let m = &v["metrics"];
    let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
    assert!((0.0..=1.0).contains(&f("cpu_utilisation")), "{m}");
    assert!(m["cpu_count"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(m["memory_total_bytes"].as_u64(), Some(meminfo_total()));
    assert!(
        f("memory_available_bytes") <= f("memory_total_bytes"),
        "{m}"
    );
    assert!(f("memory_used_bytes") > 0.0, "{m}");
    assert!(m["load"][0].as_f64().unwrap() >= 0.0, "{m}");
    assert!((0.5..=5.0).contains(&f("interval_s")), "{m}");
    for d in m["disks"].as_array().unwrap() {
        let total = d["total_bytes"].as_u64().unwrap();
        assert!(d["used_bytes"].as_u64().unwrap() <= total, "{d}");
    }
    let root_fs = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("/"))
        .map(|l| l.split_whitespace().nth(2).unwrap().to_owned())
        .next_back()
        .unwrap();
    if !sonde_agent::host::metrics::DEFAULT_IGNORE_FS.contains(&root_fs.as_str()) {
        let root = m["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["mount"] == "/");
        let root = root.unwrap_or_else(|| panic!("/ ({root_fs}) not reported: {}", m["disks"]));
        let st = nix::sys::statvfs::statvfs("/").unwrap();
        assert_eq!(
            root["total_bytes"].as_u64(),
            Some(st.blocks() * st.fragment_size())
        );
    }

    // Interface counters: quiet veth, then ~1 MB/s of UDP into the
    // namespace for 4 s; the agent's rates for the veth follow.
    let veth_of = |v: &Value| -> Option<(f64, f64)> {
        let i = v["metrics"]["interfaces"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == veth.as_str())?;
        Some((
            i["tx_bytes_per_second"].as_f64()?,
            i["tx_packets_per_second"].as_f64()?,
        ))
    };
    let (quiet, _) = veth_of(&v)
        .unwrap_or_else(|| panic!("{veth} not reported: {}", v["metrics"]["interfaces"]));
    assert!(quiet < 10_000.0, "veth already busy: {quiet} B/s");
    let sender = tokio::spawn(async {
        let socket = tokio::net::UdpSocket::bind("198.18.84.1:0").await.unwrap();
        let payload = vec![0x5a_u8; 1000];
        for _ in 0..40 {
            for _ in 0..100 {
                socket.send_to(&payload, "198.18.84.2:9").await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (bytes, packets) = eventually("veth counters moving", Duration::from_secs(10), || async {
        let v = detail(&api).await?;
        veth_of(&v).filter(|(b, _)| *b > 300_000.0)
    })
    .await;
    sender.await.unwrap();
    eprintln!("veth {veth}: {bytes:.0} B/s, {packets:.0} packets/s while sending ~1 MB/s");
    assert!(bytes < 5_000_000.0, "{bytes} B/s is more than was sent");
    assert!(
        (300.0..=3000.0).contains(&packets),
        "{packets} packets/s for ~1000/s sent"
    );

    agent.terminate();
}
