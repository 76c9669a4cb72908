//! Certificate lifecycle against the real binaries: a CRL brought by a
//! reload closes the connections already open with the revoked
//! certificates (an agent session, a live view) and nothing else;
//! certificates about to expire raise `certificate-expiring` events and
//! metrics; an expired CA or certificate of our own stops the program at
//! start with the file, the subject and the date.

// Counters are whole numbers in f64: exact comparison is meant.
#![allow(clippy::float_cmp)]

use std::time::Duration;

use nix::sys::signal::Signal;
use sonde_certs::{Ca, LeafSpec};
use sonde_proto::{Identity, Role};
use sonde_tests::{Cert, World, check_config, eventually, live_stream, prom_value};
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(20);

/// A live stream that the collector accepted.
async fn live(world: &World, cert: &Cert) -> reqwest::Response {
    let r = live_stream(world, cert).await;
    assert_eq!(r.status().as_u16(), 200);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_new_crl_closes_the_revoked_certificates_connections() {
    let world = World::new();
    world.collector_config("[[tenant]]\nname = \"acme\"\nprefixes = [\"127.0.0.0/24\"]\n");
    let collector = world.start_collector(&[]).await;
    let a1 = world.cert("acme", Role::Agent, "a1");
    world.agent_config("a1", &a1, "[heartbeat]\ninterval = \"300ms\"\n");
    let agent = world.start_agent("a1", &[]);
    // a2 (not revoked) pings loopback every 200 ms, so live frames flow.
    let a2 = world.cert("acme", Role::Agent, "a2");
    world.agent_config(
        "a2",
        &a2,
        "[heartbeat]\ninterval = \"300ms\"\n\
         [[ping]]\ntargets = [\"127.0.0.1\", \"127.0.0.2\"]\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
    );
    let _a2 = world.start_agent("a2", &[]);
    let keep_cert = world.cert("acme", Role::Viewer, "keep");
    let keep = world.api(Some(&keep_cert));
    for name in ["a1", "a2"] {
        eventually("agents connected", WAIT, || async {
            keep.agent("acme", name)
                .await
                .filter(|a| a["connected"] == true)
        })
        .await;
    }
    let gone_cert = world.cert("acme", Role::Viewer, "gone");
    let gone = world.api(Some(&gone_cert));
    let mut gone_live = live(&world, &gone_cert).await;
    let mut keep_live = live(&world, &keep_cert).await;

    world.pki.revoke("acme-viewer-gone").unwrap();
    world.pki.revoke("acme-agent-a1").unwrap();
    collector.signal(Signal::SIGHUP);
    let reloaded = std::time::Instant::now();

    // The revoked viewer's stream ends (its frames may arrive until then).
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = gone_live.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "revoked viewer's live stream still open");
    let after = reloaded.elapsed();
    assert!(
        after < Duration::from_secs(5),
        "stream ended {after:?} after the reload"
    );
    collector
        .wait_log(
            &[
                "closing connection: certificate no longer accepted",
                "peer=sonde://acme/viewer/gone",
                "reason=client certificate revoked by the CRL",
            ],
            WAIT,
        )
        .await;
    collector
        .wait_log(
            &[
                "closing connection: certificate no longer accepted",
                "peer=sonde://acme/agent/a1",
            ],
            WAIT,
        )
        .await;
    // The agent's session is over and its reconnections are refused.
    eventually("a1 disconnected", WAIT, || async {
        keep.agent("acme", "a1")
            .await
            .filter(|a| a["connected"] == false)
    })
    .await;
    agent.wait_log(&["collector session lost"], WAIT).await;
    collector
        .wait_log(
            &[
                "TLS handshake rejected",
                "reason=client certificate revoked by the CRL",
            ],
            WAIT,
        )
        .await;
    assert!(
        gone.get("/api/v1/whoami").await.is_err(),
        "revoked viewer served"
    );

    // The other viewer's connection, and its live stream, carry on.
    let (status, me) = keep.get("/api/v1/whoami").await.unwrap();
    assert_eq!(status, 200, "{me}");
    let mut frames = 0;
    while frames < 3 {
        let next = tokio::time::timeout(Duration::from_secs(5), keep_live.chunk()).await;
        let Ok(Ok(Some(chunk))) = next else {
            panic!("the unrevoked live stream ended: {next:?}");
        };
        frames += String::from_utf8_lossy(&chunk)
            .matches("event: frame")
            .count();
    }
    let closed = world
        .collector_metric("sonde_collector_connections_closed_certificate_total")
        .await;
    assert_eq!(closed, 2.0, "only the two revoked connections are closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_about_to_expire_raise_events_and_metrics() {
    let world = World::new();
    // The collector's own certificate ends in 3 days.
    let server = world.pki.ca().issue_server(&[], 3).unwrap();
    server.write(world.pki.dir(), "collector").unwrap();
    // `expiry-warning` lands in the [tls] table the helper writes.
    world.collector_config("expiry-warning = \"6d\"\n[access]\noperator-tenants = [\"noc\"]\n");
    let collector = world.start_collector(&[]).await;
    // Agents: one certificate ends in 5 days (inside the 6-day warning),
    // one in 10 (outside it, though inside the 14-day default).
    let mut agents = Vec::new();
    for (name, days) in [("soon", 5), ("later", 10)] {
        let id = Identity::new("acme", Role::Agent, name).unwrap();
        let cert = world.write_cert(
            &format!("acme-agent-{name}"),
            &world.pki.ca().issue_client(&id, days).unwrap(),
        );
        world.agent_config(name, &cert, "");
        agents.push(world.start_agent(name, &[]));
    }
    let acme = world.api(Some(&world.cert("acme", Role::Viewer, "v")));
    let noc = world.api(Some(&world.cert("noc", Role::Viewer, "ops")));
    let expiring = |events: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        events
            .into_iter()
            .filter(|e| e["kind"] == "certificate-expiring")
            .collect()
    };
    for name in ["soon", "later"] {
        eventually("agents connected", WAIT, || async {
            acme.agent("acme", name)
                .await
                .filter(|a| a["connected"] == true)
        })
        .await;
    }
    let ev = eventually("the agent's event", WAIT, || async {
        let e = expiring(acme.events().await);
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    let detail = &ev[0]["detail"];
    assert_eq!(ev[0]["agent"], "soon", "{ev:?}");
    assert_eq!(detail["certificate"], "client");
    assert_eq!(detail["identity"], "sonde://acme/agent/soon");
    let days = detail["days_left"].as_f64().unwrap();
    assert!((4.9..=5.0).contains(&days), "{days} days left");
    // The collector's own certificate: an operators' event.
    let own = eventually("the server certificate's event", WAIT, || async {
        let e: Vec<_> = expiring(noc.events().await)
            .into_iter()
            .filter(|e| e["detail"]["certificate"] == "server")
            .collect();
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["detail"]["subject"], "CN=localhost");
    let metrics = world.collector_metrics().await;
    let left = prom_value(
        &metrics,
        "sonde_collector_server_certificate_expiry_seconds",
    )
    .unwrap();
    assert!(
        (2.9 * 86_400.0..=3.0 * 86_400.0).contains(&left),
        "{left} s left"
    );
    let ca = prom_value(&metrics, "sonde_collector_ca_certificate_expiry_seconds").unwrap();
    assert!(ca > 365.0 * 86_400.0, "CA: {ca} s left");
    assert_eq!(
        prom_value(&metrics, "sonde_collector_client_certificates_expiring"),
        Some(1.0)
    );
    // A reconnection is not a new warning: once a day per certificate.
    let mut soon = agents.remove(0);
    soon.kill9();
    let _soon = world.start_agent("soon", &[]);
    collector
        .wait_log(&["agent session opened", "agent=acme/soon"], WAIT)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(expiring(acme.events().await).len(), 1);
    // The acme viewer does not see the collector's own event.
    assert!(
        expiring(acme.events().await)
            .iter()
            .all(|e| e["detail"]["certificate"] == "client")
    );
}

fn expired_leaf(ca: &Ca, hosts: &[String]) -> sonde_certs::Issued {
    let now = OffsetDateTime::now_utc();
    let mut spec = LeafSpec::server(hosts, 1);
    spec.not_before = now - time::Duration::days(30);
    spec.not_after = now - time::Duration::days(1);
    ca.issue(&spec).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_of_our_own_stop_the_start_with_a_clear_message() {
    // The collector with an expired server certificate.
    let world = World::new();
    expired_leaf(world.pki.ca(), &["localhost".into()])
        .write(world.pki.dir(), "collector")
        .unwrap();
    let config = world.collector_config("");
    let mut collector = world.spawn_collector();
    let status = collector.wait_exit(WAIT).expect("collector still running");
    assert!(!status.success());
    let log = collector.log_text();
    assert!(
        log.contains("collector.pem: certificate CN=localhost expired at ")
            && log.contains("issue a new one"),
        "{log}"
    );
    let (ok, check) = check_config("sonde-collector", &config);
    assert!(
        !ok && check.contains("tls.cert") && check.contains("expired at"),
        "{check}"
    );

    // An expired CA: the collector and the agent both name it.
    let world = World::new();
    let now = OffsetDateTime::now_utc();
    let old = Ca::generate_valid(
        "sonde old CA",
        now - time::Duration::days(400),
        now - time::Duration::days(35),
    )
    .unwrap();
    std::fs::write(world.pki.dir().join("ca.pem"), old.cert_pem()).unwrap();
    let config = world.collector_config("");
    let (ok, check) = check_config("sonde-collector", &config);
    assert!(
        !ok && check.contains("tls.ca")
            && check.contains("CA certificate CN=sonde old CA")
            && check.contains("expired at"),
        "{check}"
    );
    let cert = world.cert("acme", Role::Agent, "a1");
    let agent_config = world.agent_config("a1", &cert, "");
    let mut agent = world.start_agent("a1", &[]);
    let status = agent.wait_exit(WAIT).expect("agent still running");
    assert!(!status.success());
    let log = agent.log_text();
    assert!(
        log.contains("tls.ca")
            && log.contains("CA certificate CN=sonde old CA, O=sonde dev PKI expired at"),
        "{log}"
    );
    let (ok, check) = check_config("sonde-agent", &agent_config);
    assert!(!ok && check.contains("expired at"), "{check}");
}
