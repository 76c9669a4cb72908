//! Mutual TLS: every kind of bad client certificate is refused at the
//! handshake (or with PermissionDenied for a valid non-agent identity), the
//! collector logs why, and nothing of the caller reaches the store.

use std::time::Duration;

use nix::sys::signal::Signal;
use sonde_certs::{Ca, LeafSpec};
use sonde_proto::{Identity, Role};
use sonde_tests::{Cert, World};
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(20);

/// Runs an agent with `cert` until the collector logs `reason`, then checks
/// that the API refuses the same certificate and the agent never registered.
async fn refused(world: &World, name: &str, cert: &Cert, reason: &str, noc: &sonde_tests::Api) {
    world.agent_config(name, cert, "");
    let agent = world.start_agent(name, &[]);
    agent.wait_log(&["collector session lost"], WAIT).await;
    // The same certificate cannot use the HTTP API either.
    let api = world.api(Some(cert));
    match api.get("/api/v1/agents").await {
        Err(_) => {}
        Ok((403, _)) if reason.contains("role") => {}
        Ok((status, body)) => panic!("{name}: API answered {status} {body}"),
    }
    assert!(
        noc.agent("acme", name).await.is_none(),
        "{name} registered despite {reason}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_with_a_reason() {
    let world = World::new();
    world.collector_config("[access]\noperator-tenants = [\"noc\"]\n");
    let id = |name: &str| Identity::new("acme", Role::Agent, name).unwrap();

    // Prepared before start: a revoked certificate is in the CRL at start.
    let revoked = world.cert("acme", Role::Agent, "revoked");
    world.pki.revoke("acme-agent-revoked").unwrap();

    let collector = world.start_collector(&[]).await;
    let noc = world.api(Some(&world.cert("noc", Role::Viewer, "ops")));

    // 1. No client certificate at all.
    let anonymous = world.api(None);
    assert!(
        anonymous.get("/api/v1/agents").await.is_err(),
        "no-cert request succeeded"
    );
    collector
        .wait_log(
            &[
                "TLS handshake rejected",
                "reason=no client certificate presented",
            ],
            WAIT,
        )
        .await;

    // 2. A certificate from another CA.
    let rogue_ca = Ca::generate("rogue").unwrap();
    let foreign = world.write_cert(
        "foreign",
        &rogue_ca.issue_client(&id("foreign"), 30).unwrap(),
    );
    refused(
        &world,
        "foreign",
        &foreign,
        "not issued by the configured CA",
        &noc,
    )
    .await;
    collector
        .wait_log(
            &["reason=client certificate not issued by the configured CA"],
            WAIT,
        )
        .await;

    // 3. An expired certificate.
    let mut spec = LeafSpec::client(&id("expired"), 30);
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(10);
    spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired = world.write_cert("expired", &world.pki.ca().issue(&spec).unwrap());
    refused(&world, "expired", &expired, "expired", &noc).await;
    collector
        .wait_log(&["reason=client certificate expired"], WAIT)
        .await;

    // 4. A revoked certificate (CRL loaded at start).
    refused(&world, "revoked", &revoked, "revoked", &noc).await;
    collector
        .wait_log(&["reason=client certificate revoked by the CRL"], WAIT)
        .await;

    // 5. A certificate without a sonde:// URI SAN (but with another URI).
    let mut spec = LeafSpec::client(&id("nosan"), 30);
    spec.uris = vec!["spiffe://acme/agent/nosan".into()];
    let nosan = world.write_cert("nosan", &world.pki.ca().issue(&spec).unwrap());
    refused(&world, "nosan", &nosan, "no sonde SAN", &noc).await;
    collector
        .wait_log(
            &["reason=client certificate refused: certificate has no sonde:// URI SAN"],
            WAIT,
        )
        .await;
    // ...and one whose sonde URI is malformed.
    let mut spec = LeafSpec::client(&id("badsan"), 30);
    spec.uris = vec!["sonde://acme/root/badsan".into()];
    let badsan = world.write_cert("badsan", &world.pki.ca().issue(&spec).unwrap());
    refused(&world, "badsan", &badsan, "bad role", &noc).await;
    collector
        .wait_log(&["reason=client certificate refused: role \"root\""], WAIT)
        .await;

    // 6. A valid viewer certificate may not open an agent session.
    let viewer = world.cert("acme", Role::Viewer, "alice");
    world.agent_config("alice", &viewer, "");
    let agent = world.start_agent("alice", &[]);
    let line = agent
        .wait_log(&["collector session lost", "refused the session"], WAIT)
        .await;
    assert!(
        line.contains("PermissionDenied") || line.contains("permission"),
        "{line}"
    );
    collector
        .wait_log(
            &[
                "session refused",
                "sonde://acme/viewer/alice",
                "role viewer may not open an agent session",
            ],
            WAIT,
        )
        .await;
    drop(agent);
    assert!(noc.agent("acme", "alice").await.is_none());

    // A good agent still works alongside all of that...
    let good = world.cert("acme", Role::Agent, "good");
    world.agent_config("good", &good, "[heartbeat]\ninterval = \"200ms\"\n");
    let agent = world.start_agent("good", &[]);
    sonde_tests::eventually("good agent registered", WAIT, || async {
        noc.agent("acme", "good")
            .await
            .filter(|a| a["connected"] == true)
    })
    .await;
    drop(agent);

    // ...until it is revoked: after SIGHUP the collector reloads the CRL and
    // refuses the certificate's new connections.
    world.pki.revoke("acme-agent-good").unwrap();
    collector.signal(Signal::SIGHUP);
    collector.wait_log(&["configuration reloaded"], WAIT).await;
    let before = collector
        .log_text()
        .matches("reason=client certificate revoked by the CRL")
        .count();
    let api = world.api(Some(&good));
    assert!(
        api.get("/api/v1/agents").await.is_err(),
        "revoked certificate still accepted after reload"
    );
    sonde_tests::eventually("second revocation logged", WAIT, || async {
        (collector
            .log_text()
            .matches("reason=client certificate revoked by the CRL")
            .count()
            > before)
            .then_some(())
    })
    .await;
}
