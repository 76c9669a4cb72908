//! Mutual TLS: every kind of bad client certificate is refused at the
//! handshake (or with `PermissionDenied` for a valid non-agent identity),
//! the collector logs why, and nothing of the caller reaches the store.

use std::time::Duration;

use nix::sys::signal::Signal;
use sonde_certs::{Ca, LeafSpec};
use sonde_proto::v1::AgentMessage;
use sonde_proto::v1::agent_service_client::AgentServiceClient;
use sonde_proto::{Identity, Role};
use sonde_tests::{Api, Cert, Proc, World, eventually};
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    world: World,
    collector: Proc,
    noc: Api,
}

async fn setup(prepare: impl FnOnce(&World)) -> Setup {
    let world = World::new();
    world.collector_config("[access]\noperator-tenants = [\"noc\"]\n");
    prepare(&world);
    let collector = world.start_collector(&[]).await;
    let noc = world.api(Some(&world.cert("noc", Role::Viewer, "ops")));
    Setup {
        world,
        collector,
        noc,
    }
}

fn agent_id(name: &str) -> Identity {
    Identity::new("acme", Role::Agent, name).unwrap()
}

impl Setup {
    /// Runs an agent with `cert` until its session fails and the collector
    /// logs `reason`; checks that the API refuses the same certificate at
    /// TLS and that the agent is not connected (and, unless it was known
    /// before, not registered at all).
    async fn refused_at_handshake(&self, name: &str, cert: &Cert, reason: &str) {
        self.refused(name, cert, reason, false).await;
    }

    async fn refused(&self, name: &str, cert: &Cert, reason: &str, known_before: bool) {
        self.world.agent_config(name, cert, "");
        let agent = self.world.start_agent(name, &[]);
        agent.wait_log(&["collector session lost"], WAIT).await;
        self.collector
            .wait_log(
                &["TLS handshake rejected", &format!("reason={reason}")],
                WAIT,
            )
            .await;
        let api = self.world.api(Some(cert));
        if let Ok((status, body)) = api.get("/api/v1/agents").await {
            panic!("{name}: API answered {status} {body}");
        }
        match self.noc.agent("acme", name).await {
            None => {}
            Some(a) if known_before => assert_eq!(a["connected"], false, "{name} connected: {a}"),
            Some(a) => panic!("{name} registered: {a}"),
        }
    }

    /// For a certificate the agent program itself refuses (no agent
    /// identity): the agent will not start and says why (exit 78), and a
    /// client presenting it anyway — an old agent, a hand-made one — is
    /// refused by the collector, which logs `reason`.
    async fn refused_before_and_at_the_collector(
        &self,
        name: &str,
        cert: &Cert,
        said: &str,
        reason: &str,
    ) {
        self.world.agent_config(name, cert, "");
        let mut agent = self.world.start_agent(name, &[]);
        let status = agent.wait_exit(WAIT).expect("the agent exits");
        assert_eq!(status.code(), Some(78), "{name}");
        agent.wait_log(&["not starting", said], WAIT).await;
        let refused = match sonde_tests::try_grpc_channel(&self.world, cert).await {
            Err(e) => Some(e.to_string()),
            Ok(channel) => {
                let mut client = AgentServiceClient::new(channel);
                client
                    .session(tokio_stream::iter(Vec::<AgentMessage>::new()))
                    .await
                    .err()
                    .map(|s| s.to_string())
            }
        };
        assert!(refused.is_some(), "{name}: the collector took the session");
        self.collector.wait_log(&[reason], WAIT).await;
        assert!(
            self.noc.agent("acme", name).await.is_none(),
            "{name} registered"
        );
    }

    fn issue(&self, stem: &str, spec: &LeafSpec) -> Cert {
        self.world
            .write_cert(stem, &self.world.pki.ca().issue(spec).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate() {
    let s = setup(|_| {}).await;
    assert!(
        s.world.api(None).get("/api/v1/agents").await.is_err(),
        "no-cert request succeeded"
    );
    s.collector
        .wait_log(
            &[
                "TLS handshake rejected",
                "reason=no client certificate presented",
            ],
            WAIT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca() {
    let s = setup(|_| {}).await;
    let rogue = Ca::generate("rogue").unwrap();
    let cert = s.world.write_cert(
        "foreign",
        &rogue.issue_client(&agent_id("foreign"), 30).unwrap(),
    );
    s.refused_at_handshake(
        "foreign",
        &cert,
        "client certificate not issued by the configured CA",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate() {
    let s = setup(|_| {}).await;
    let mut spec = LeafSpec::client(&agent_id("expired"), 30);
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(10);
    spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let cert = s.issue("expired", &spec);
    // The agent will not even try with it: it stops at start, naming the
    // file and the date.
    s.world.agent_config("expired", &cert, "");
    let mut agent = s.world.start_agent("expired", &[]);
    let status = agent.wait_exit(WAIT).expect("agent still running");
    assert!(!status.success());
    let log = agent.log_text();
    assert!(
        log.contains("tls.cert")
            && log.contains("expired.pem: certificate")
            && log.contains("expired at"),
        "{log}"
    );
    // Presented anyway (by an HTTPS client), the collector refuses it at
    // the handshake and says why.
    let api = s.world.api(Some(&cert));
    if let Ok((status, body)) = api.get("/api/v1/agents").await {
        panic!("expired certificate served: {status} {body}");
    }
    s.collector
        .wait_log(
            &[
                "TLS handshake rejected",
                "reason=client certificate expired",
            ],
            WAIT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_without_a_sonde_san() {
    let s = setup(|_| {}).await;
    let mut spec = LeafSpec::client(&agent_id("nosan"), 30);
    spec.uris = vec!["spiffe://acme/agent/nosan".into()];
    let cert = s.issue("nosan", &spec);
    s.refused_before_and_at_the_collector(
        "nosan",
        &cert,
        "certificate has no sonde:// URI SAN",
        "reason=client certificate refused: certificate has no sonde:// URI SAN",
    )
    .await;
    // A malformed sonde URI is refused too, naming what is wrong.
    let mut spec = LeafSpec::client(&agent_id("badsan"), 30);
    spec.uris = vec!["sonde://acme/root/badsan".into()];
    let cert = s.issue("badsan", &spec);
    s.refused_before_and_at_the_collector(
        "badsan",
        &cert,
        "role \"root\"",
        "reason=client certificate refused: role \"root\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificate_at_start_and_after_reload() {
    let s = setup(|world| {
        world.cert("acme", Role::Agent, "revoked");
        world.pki.revoke("acme-agent-revoked").unwrap();
    })
    .await;
    let revoked = Cert {
        cert: s.world.pki.dir().join("acme-agent-revoked.pem"),
        key: s.world.pki.dir().join("acme-agent-revoked.key"),
    };
    s.refused_at_handshake("revoked", &revoked, "client certificate revoked by the CRL")
        .await;

    // A working agent is revoked while the collector runs: after SIGHUP the
    // new CRL refuses its new connections.
    let good = s.world.cert("acme", Role::Agent, "good");
    s.world
        .agent_config("good", &good, "[heartbeat]\ninterval = \"200ms\"\n");
    let agent = s.world.start_agent("good", &[]);
    eventually("good agent registered", WAIT, || async {
        s.noc
            .agent("acme", "good")
            .await
            .filter(|a| a["connected"] == true)
    })
    .await;
    drop(agent);
    s.world.pki.revoke("acme-agent-good").unwrap();
    s.collector.signal(Signal::SIGHUP);
    s.collector
        .wait_log(&["configuration reloaded"], WAIT)
        .await;
    s.refused("good", &good, "client certificate revoked by the CRL", true)
        .await;
    let revocations = s
        .collector
        .log_text()
        .matches("reason=client certificate revoked by the CRL")
        .count();
    assert!(
        revocations >= 2,
        "{revocations} revocation rejections logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_certificate_cannot_open_an_agent_session() {
    let s = setup(|_| {}).await;
    let viewer = s.world.cert("acme", Role::Viewer, "alice");
    s.refused_before_and_at_the_collector(
        "alice",
        &viewer,
        "sonde://acme/viewer/alice is a viewer certificate; an agent needs role agent",
        "role viewer may not open an agent session",
    )
    .await;
    s.collector
        .wait_log(&["session refused", "sonde://acme/viewer/alice"], WAIT)
        .await;
}
