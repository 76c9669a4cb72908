//! Who may do what: every HTTP API endpoint, UI page and gRPC method,
//! called with a certificate of each role (agent, viewer, admin) of two
//! tenants and of an operator tenant, against the real collector with
//! data of both tenants. The observed status of every call is compared
//! with the table below, and the whole table is printed when any cell
//! differs, so a change of policy shows as a diff.
//!
//! The policy the table encodes: agent certificates may not use the API
//! or the UI (static assets, which hold no data, excepted) nor the query
//! service, and only they may open a session; viewers and admins read
//! their own tenant and the prefixes granted to it, operators everything;
//! the role is checked before the resource, so a viewer's change is 403
//! whatever it names; naming another tenant is 403; another tenant's
//! definition, silence or heartbeat check by ID is 404 (its existence is
//! not revealed), and on the ping listener a tenant's ping key reaches
//! only its own checks.
//! A second table adds who measures: a viewer sees its own agents'
//! series everywhere, trusted and operator tenants' agents' in its
//! grants only, and nothing of an untrusted tenant's agents.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;
use sonde_proto::Role;
use sonde_proto::v1::agent_message::Kind;
use sonde_proto::v1::agent_service_client::AgentServiceClient;
use sonde_proto::v1::query_service_client::QueryServiceClient;
use sonde_proto::v1::{AgentMessage, Hello};
use sonde_tests::{Api, Cert, World, eventually, grpc_channel};

const WAIT: Duration = Duration::from_secs(30);

/// The ping listener's port, one per test binary.
fn ping_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(sonde_tests::free_port)
}

/// The callers, in the columns' order.
const WHO: [(&str, Role, &str); 7] = [
    ("acme", Role::Agent, "a1"),
    ("acme", Role::Viewer, "av"),
    ("acme", Role::Admin, "aa"),
    ("globex", Role::Viewer, "gv"),
    ("globex", Role::Admin, "ga"),
    ("noc", Role::Viewer, "nv"),
    ("noc", Role::Admin, "na"),
];

struct Setup {
    world: World,
    certs: Vec<Cert>,
    apis: Vec<Api>,
    _procs: Vec<sonde_tests::Proc>,
}

async fn setup() -> Setup {
    let world = World::new();
    world.collector_config_with(
        &format!("ping-listen = \"127.0.0.1:{}\"", ping_port()),
        "[access]\noperator-tenants = [\"noc\"]\n\
         [[tenant]]\nname = \"acme\"\nprefixes = [\"127.0.0.0/24\"]\n\
         [[tenant]]\nname = \"globex\"\nprefixes = [\"127.0.1.0/24\"]\n",
    );
    let mut procs = vec![world.start_collector(&[]).await];
    for (tenant, name, target) in [("acme", "a1", "127.0.0.1"), ("globex", "g1", "127.0.1.1")] {
        let cert = world.cert(tenant, Role::Agent, name);
        world.agent_config(
            name,
            &cert,
            &format!(
                "[heartbeat]\ninterval = \"500ms\"\n\
                 [[ping]]\ntargets = [\"{target}\"]\ninterval = \"500ms\"\ntimeout = \"200ms\"\n"
            ),
        );
        procs.push(world.start_agent(name, &[]));
    }
    let certs: Vec<Cert> = WHO.iter().map(|(t, r, n)| world.cert(t, *r, n)).collect();
    let apis = certs.iter().map(|c| world.api(Some(c))).collect();
    let s = Setup {
        world,
        certs,
        apis,
        _procs: procs,
    };
    // Both agents measured something.
    let noc = &s.apis[5];
    for (tenant, name, target) in [("acme", "a1", "127.0.0.1"), ("globex", "g1", "127.0.1.1")] {
        let path = format!("/api/v1/series/{name}/{target}?tenant={tenant}");
        eventually("a series of each tenant", WAIT, || async {
            let (status, body) = noc.get(&path).await.ok()?;
            let has = |k: &str| body[k].as_array().is_some_and(|a| !a.is_empty());
            (status == 200 && (has("minutes") || has("recent"))).then_some(())
        })
        .await;
    }
    s
}

/// One HTTP call: status only.
async fn call(api: &Api, method: &str, path: &str, body: Option<&serde_json::Value>) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = api
        .client()
        .request(method, format!("{}{path}", api.base()));
    if let Some(b) = body {
        r = r.json(b);
    }
    match r.send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// Rows of (what, observed per caller); compared with `expected`.
#[derive(Default)]
struct Matrix {
    rows: Vec<(String, Vec<String>, Vec<String>)>,
}

impl Matrix {
    fn row(&mut self, what: &str, expected: &[&str], observed: Vec<String>) {
        self.rows.push((
            what.to_owned(),
            expected.iter().map(|s| (*s).to_owned()).collect(),
            observed,
        ));
    }

    fn check(&self) {
        let header = WHO
            .iter()
            .map(|(t, r, _)| format!("{t}/{r}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut table = format!("{:<52} {header}\n", "");
        let mut wrong = 0;
        for (what, expected, observed) in &self.rows {
            let cells: Vec<String> = expected
                .iter()
                .zip(observed)
                .map(|(e, o)| {
                    if e == o {
                        format!("{o:>11}")
                    } else {
                        wrong += 1;
                        format!("{:>11}", format!("{o}!={e}"))
                    }
                })
                .collect();
            let _ = writeln!(table, "{what:<52}{}", cells.join(""));
        }
        eprintln!("{table}");
        assert_eq!(wrong, 0, "{wrong} cells differ from the policy:\n{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one table, read top to bottom
async fn every_endpoint_and_method_allows_exactly_whom_it_should() {
    let s = setup().await;
    let mut m = Matrix::default();
    let now_ms = sonde_runtime::clock::unix_millis();
    // Reads. Columns: acme agent, viewer, admin; globex viewer, admin;
    // noc (operator) viewer, admin.
    let all = ["403", "200", "200", "200", "200", "200", "200"];
    let acme_only = ["403", "200", "200", "403", "403", "200", "200"];
    let globex_only = ["403", "403", "403", "200", "200", "200", "200"];
    let reads: Vec<(String, [&str; 7])> = vec![
        ("/api/v1/whoami".into(), all),
        ("/api/v1/agents".into(), all),
        ("/api/v1/agents/a1?tenant=acme".into(), acme_only),
        ("/api/v1/agents/g1?tenant=globex".into(), globex_only),
        ("/api/v1/events".into(), all),
        ("/api/v1/prefixes".into(), all),
        ("/api/v1/prefixes/127.0.0.0/24".into(), acme_only),
        ("/api/v1/prefixes/127.0.1.0/24".into(), globex_only),
        (
            "/api/v1/series/a1/127.0.0.1?tenant=acme".into(),
            ["403", "200", "200", "404", "404", "200", "200"],
        ),
        (
            "/api/v1/series/g1/127.0.1.1?tenant=globex".into(),
            ["403", "404", "404", "200", "200", "200", "200"],
        ),
        ("/api/v1/outages".into(), all),
        ("/api/v1/status".into(), all),
        ("/api/v1/alerts".into(), all),
        ("/api/v1/silences".into(), all),
        (format!("/api/v1/replay?at={}", now_ms - 120_000), all),
        ("/api/v1/targets/definitions".into(), all),
        ("/".into(), all),
        ("/agents".into(), all),
        ("/prefixes/127.0.0.0/24".into(), acme_only),
        ("/prefixes/127.0.1.0/24".into(), globex_only),
        ("/ui/app.js".into(), ["200"; 7]),
    ];
    for (path, expected) in &reads {
        let mut observed = Vec::new();
        for api in &s.apis {
            observed.push(call(api, "GET", path, None).await.to_string());
        }
        m.row(&format!("GET {path}"), expected, observed);
    }
    // The live stream: its status only.
    let mut observed = Vec::new();
    for api in &s.apis {
        let r = api
            .client()
            .get(format!("{}/api/v1/live", api.base()))
            .send()
            .await
            .unwrap();
        observed.push(r.status().as_u16().to_string());
    }
    m.row("GET /api/v1/live", &all, observed);

    // Changes: a target definition and a silence, each call on a fresh one
    // made by acme's admin, so every caller meets the same state.
    let target =
        |name: &str| json!({"name": name, "target": "127.0.0.9", "kind": "ping", "tenant": "acme"});
    let aa = &s.apis[2];
    let mut created = Vec::new();
    for (i, api) in s.apis.iter().enumerate() {
        created.push(
            call(
                api,
                "POST",
                "/api/v1/targets",
                Some(&target(&format!("t{i}"))),
            )
            .await
            .to_string(),
        );
    }
    // Only acme's admin and the operators' admin may add to acme.
    m.row(
        "POST /api/v1/targets (acme address)",
        &["403", "403", "201", "403", "403", "403", "201"],
        created,
    );
    let mut fresh = Vec::new();
    for i in 0..WHO.len() {
        let (status, body) = aa
            .send(
                reqwest::Method::POST,
                "/api/v1/targets",
                Some(&target(&format!("u{i}"))),
                &[],
            )
            .await;
        assert_eq!(status, 201, "{body}");
        fresh.push(body["id"].as_i64().expect("target id"));
    }
    let one_of_acme = ["403", "200", "200", "404", "404", "200", "200"];
    let acme_admins = ["403", "403", "200", "403", "404", "403", "200"];
    let mut get = Vec::new();
    let mut put = Vec::new();
    let mut delete = Vec::new();
    for (i, api) in s.apis.iter().enumerate() {
        let path = format!("/api/v1/targets/{}", fresh[i]);
        get.push(call(api, "GET", &path, None).await.to_string());
        let mut change = target(&format!("u{i}"));
        change["enabled"] = json!(false);
        put.push(call(api, "PUT", &path, Some(&change)).await.to_string());
        delete.push(call(api, "DELETE", &path, None).await.to_string());
    }
    m.row("GET /api/v1/targets/ID (acme's)", &one_of_acme, get);
    m.row("PUT /api/v1/targets/ID (acme's)", &acme_admins, put);
    m.row(
        "DELETE /api/v1/targets/ID (acme's)",
        &["403", "403", "204", "403", "404", "403", "204"],
        delete,
    );

    let silence = json!({"matchers": ["agent=a1"], "duration": "1h", "comment": "matrix"});
    let mut created = Vec::new();
    for api in &s.apis {
        created.push(
            call(api, "POST", "/api/v1/silences", Some(&silence))
                .await
                .to_string(),
        );
    }
    m.row(
        "POST /api/v1/silences",
        &["403", "403", "201", "403", "201", "403", "201"],
        created,
    );
    let mut expire = Vec::new();
    for api in &s.apis {
        let (status, body) = aa
            .send(
                reqwest::Method::POST,
                "/api/v1/silences",
                Some(&silence),
                &[],
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_i64().expect("silence id");
        expire.push(
            call(api, "DELETE", &format!("/api/v1/silences/{id}"), None)
                .await
                .to_string(),
        );
    }
    m.row("DELETE /api/v1/silences/ID (acme's)", &acme_admins, expire);
    checks_rows(&s, &mut m).await;
    settings_rows(&s, &mut m).await;

    // gRPC: the query service and the agent session.
    let mut list = Vec::new();
    let mut grid_acme = Vec::new();
    let mut grid_globex = Vec::new();
    let mut session = Vec::new();
    for cert in &s.certs {
        let channel = grpc_channel(&s.world, cert).await;
        let mut q = QueryServiceClient::new(channel.clone());
        list.push(code(
            q.list_agents(sonde_proto::v1::ListAgentsRequest::default())
                .await,
        ));
        for (prefix, out) in [
            ("127.0.0.0/24", &mut grid_acme),
            ("127.0.1.0/24", &mut grid_globex),
        ] {
            let req = sonde_proto::v1::GetPrefixGridRequest {
                prefix: prefix.into(),
            };
            out.push(code(q.get_prefix_grid(req).await));
        }
        let mut a = AgentServiceClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(AgentMessage {
            kind: Some(Kind::Hello(Hello {
                agent_version: "0.0.0-matrix".into(),
                heartbeat_interval_ms: 1000,
                ..Hello::default()
            })),
        })
        .await
        .unwrap();
        let opened = a
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        session.push(code(opened));
    }
    m.row(
        "gRPC QueryService/ListAgents",
        &["PermissionDenied", "Ok", "Ok", "Ok", "Ok", "Ok", "Ok"],
        list,
    );
    m.row(
        "gRPC QueryService/GetPrefixGrid 127.0.0.0/24",
        &[
            "PermissionDenied",
            "Ok",
            "Ok",
            "PermissionDenied",
            "PermissionDenied",
            "Ok",
            "Ok",
        ],
        grid_acme,
    );
    m.row(
        "gRPC QueryService/GetPrefixGrid 127.0.1.0/24",
        &[
            "PermissionDenied",
            "PermissionDenied",
            "PermissionDenied",
            "Ok",
            "Ok",
            "Ok",
            "Ok",
        ],
        grid_globex,
    );
    m.row(
        "gRPC AgentService/Session",
        &[
            "Ok",
            "PermissionDenied",
            "PermissionDenied",
            "PermissionDenied",
            "PermissionDenied",
            "PermissionDenied",
            "PermissionDenied",
        ],
        session,
    );
    m.check();

    // What each may list is its own tenant's (operators: all).
    for (i, expect) in [(1, vec!["a1"]), (3, vec!["g1"]), (5, vec!["a1", "g1"])] {
        let body = s.apis[i].ok("/api/v1/agents").await;
        let mut names: Vec<&str> = body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, expect, "{:?}", WHO[i]);
    }
}

/// Agent settings of acme's `a1` and globex's `g1`, each named with its
/// tenant (naming another tenant is 403, as everywhere).
async fn settings_rows(s: &Setup, m: &mut Matrix) {
    let acme_reads = ["403", "200", "200", "403", "403", "200", "200"];
    let acme_admins = ["403", "403", "200", "403", "403", "403", "200"];
    let globex_admins = ["403", "403", "403", "403", "200", "403", "200"];
    let body = json!({ "grace": "1h" });
    for (agent, reads, admins) in [
        ("a1?tenant=acme", acme_reads, acme_admins),
        (
            "g1?tenant=globex",
            ["403", "403", "403", "200", "200", "200", "200"],
            globex_admins,
        ),
    ] {
        let (name, query) = agent.split_once('?').unwrap();
        let path = format!("/api/v1/agents/{name}/settings?{query}");
        let (mut get, mut put, mut delete) = (Vec::new(), Vec::new(), Vec::new());
        let mut history = Vec::new();
        let availability = path.replace("/settings", "/availability");
        for api in &s.apis {
            get.push(call(api, "GET", &path, None).await.to_string());
            history.push(call(api, "GET", &availability, None).await.to_string());
            put.push(call(api, "PUT", &path, Some(&body)).await.to_string());
            delete.push(call(api, "DELETE", &path, None).await.to_string());
        }
        m.row(&format!("GET {path}"), &reads, get);
        m.row(&format!("GET {availability}"), &reads, history);
        m.row(&format!("PUT {path}"), &admins, put);
        m.row(&format!("DELETE {path}"), &admins, delete);
    }
}

/// Heartbeat checks: each call on a fresh check of acme's, so every
/// caller meets the same state; then the ping listener, where a tenant's
/// ping key reaches only its own checks.
async fn checks_rows(s: &Setup, m: &mut Matrix) {
    let check = |name: &str| json!({"name": name, "period": "1h", "tenant": "acme"});
    let aa = &s.apis[2];
    let mut created = Vec::new();
    for (i, api) in s.apis.iter().enumerate() {
        let status = call(
            api,
            "POST",
            "/api/v1/checks",
            Some(&check(&format!("c{i}"))),
        )
        .await;
        created.push(status.to_string());
    }
    m.row(
        "POST /api/v1/checks (for acme)",
        &["403", "403", "201", "403", "403", "403", "201"],
        created,
    );
    let acme_reads = ["403", "200", "200", "404", "404", "200", "200"];
    let acme_admins = ["403", "403", "200", "403", "404", "403", "200"];
    let mut rows: Vec<(String, [&str; 7], Vec<String>)> = vec![
        ("GET /api/v1/checks/ID".into(), acme_reads, Vec::new()),
        ("GET /api/v1/checks/ID/pings".into(), acme_reads, Vec::new()),
        (
            "GET /api/v1/checks/ID/availability".into(),
            acme_reads,
            Vec::new(),
        ),
        ("PUT /api/v1/checks/ID".into(), acme_admins, Vec::new()),
        (
            "POST /api/v1/checks/ID/pause".into(),
            acme_admins,
            Vec::new(),
        ),
        (
            "POST /api/v1/checks/ID/resume".into(),
            acme_admins,
            Vec::new(),
        ),
        (
            "POST /api/v1/checks/ID/rotate".into(),
            acme_admins,
            Vec::new(),
        ),
        (
            "DELETE /api/v1/checks/ID".into(),
            ["403", "403", "204", "403", "404", "403", "204"],
            Vec::new(),
        ),
    ];
    for (i, api) in s.apis.iter().enumerate() {
        let (status, body) = aa
            .send(
                reqwest::Method::POST,
                "/api/v1/checks",
                Some(&check(&format!("d{i}"))),
                &[],
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let path = format!("/api/v1/checks/{}", body["check"]["id"]);
        let calls: [(&str, String, Option<serde_json::Value>); 8] = [
            ("GET", path.clone(), None),
            ("GET", format!("{path}/pings"), None),
            ("GET", format!("{path}/availability"), None),
            ("PUT", path.clone(), Some(check(&format!("d{i}")))),
            ("POST", format!("{path}/pause"), Some(json!({}))),
            ("POST", format!("{path}/resume"), Some(json!({}))),
            ("POST", format!("{path}/rotate"), Some(json!({}))),
            ("DELETE", path.clone(), None),
        ];
        for (row, (method, p, body)) in rows.iter_mut().zip(calls) {
            row.2
                .push(call(api, method, &p, body.as_ref()).await.to_string());
        }
    }
    for (what, expected, observed) in rows {
        m.row(&what, &expected, observed);
    }
    ping_key_rows(s, m).await;
}

/// Lists and ping keys; then the ping listener: acme's check `c2`
/// pinged by slug with each tenant's ping key.
async fn ping_key_rows(s: &Setup, m: &mut Matrix) {
    let mut listed = Vec::new();
    let mut keys = Vec::new();
    let mut made = Vec::new();
    for api in &s.apis {
        listed.push(call(api, "GET", "/api/v1/checks", None).await.to_string());
        keys.push(
            call(api, "GET", "/api/v1/checks/ping-key", None)
                .await
                .to_string(),
        );
        made.push(
            call(api, "POST", "/api/v1/checks/ping-key", Some(&json!({})))
                .await
                .to_string(),
        );
    }
    let all = ["403", "200", "200", "200", "200", "200", "200"];
    m.row("GET /api/v1/checks", &all, listed);
    m.row("GET /api/v1/checks/ping-key", &all, keys);
    m.row(
        "POST /api/v1/checks/ping-key",
        &["403", "403", "200", "403", "200", "403", "200"],
        made,
    );
    // Another tenant's list holds none of acme's checks.
    let globex = s.apis[4].ok("/api/v1/checks").await;
    assert_eq!(globex["checks"], json!([]), "{globex}");
    let aa = &s.apis[2];
    let key_of = |api: &Api| {
        let api = api.clone();
        async move {
            let (status, v) = api
                .send(
                    reqwest::Method::POST,
                    "/api/v1/checks/ping-key",
                    Some(&json!({})),
                    &[],
                )
                .await;
            assert_eq!(status, 200, "{v}");
            v["ping_key"].as_str().expect("ping key").to_owned()
        }
    };
    let acme_key = key_of(aa).await;
    let globex_key = key_of(&s.apis[4]).await;
    let plain = reqwest::Client::builder()
        .use_preconfigured_tls(sonde_tests::client_tls(
            &s.world.pki.dir().join("ca.pem"),
            None,
        ))
        .build()
        .unwrap();
    let mut pinged = Vec::new();
    for key in [&acme_key, &globex_key] {
        let url = format!("https://localhost:{}/ping/{key}/c2", ping_port());
        let r = plain.post(&url).body("matrix").send().await.unwrap();
        pinged.push(r.status().as_u16().to_string());
    }
    m.row(
        "ping acme's check c2 by acme's key, globex's key",
        &["200", "404"],
        pinged,
    );
}

fn code<T>(r: Result<T, tonic::Status>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// The measuring agents: tenant, name, last octet of what they probe.
const AGENTS: [(&str, &str, u8); 4] = [
    ("acme", "a1", 1),
    ("initech", "i1", 2),
    ("noc", "n1", 3),
    ("globex", "g1", 4),
];

/// A collector with acme (trusting initech), globex and initech, the noc
/// operator tenant, and one agent of each probing acme's, globex's,
/// initech's and nobody's prefix; returns once all 16 series have data.
async fn measured_world() -> (World, Vec<sonde_tests::Proc>) {
    let world = World::new();
    world.collector_config(
        "[access]\noperator-tenants = [\"noc\"]\n\
         [[tenant]]\nname = \"acme\"\nprefixes = [\"127.0.0.0/24\"]\ntrust = [\"initech\"]\n\
         [[tenant]]\nname = \"globex\"\nprefixes = [\"127.0.1.0/24\"]\n\
         [[tenant]]\nname = \"initech\"\nprefixes = [\"127.0.2.0/24\"]\n",
    );
    let mut procs = vec![world.start_collector(&[]).await];
    // Each agent probes acme's, globex's, initech's and nobody's prefix;
    // the last octet tells the agents apart.
    let agents = [
        ("acme", "a1", 1),
        ("initech", "i1", 2),
        ("noc", "n1", 3),
        ("globex", "g1", 4),
    ];
    for (tenant, name, host) in agents {
        let cert = world.cert(tenant, Role::Agent, name);
        let targets: Vec<String> = [0, 1, 2, 9]
            .iter()
            .map(|net| format!("\"127.0.{net}.{host}\""))
            .collect();
        world.agent_config(
            name,
            &cert,
            &format!(
                "[heartbeat]\ninterval = \"500ms\"\n\
                 [[ping]]\ntargets = [{}]\ninterval = \"500ms\"\ntimeout = \"200ms\"\n",
                targets.join(", ")
            ),
        );
        procs.push(world.start_agent(name, &[]));
    }
    let noc = world.api(Some(&world.cert("noc", Role::Viewer, "nv")));
    eventually("every agent's four series", WAIT, || async {
        let v = noc.ok("/api/v1/targets?limit=1000").await;
        (v["targets"].as_array()?.len() == 16).then_some(())
    })
    .await;
    (world, procs)
}

/// `Y` when the series of `agent` (of `tenant`) to `address` answers 200
/// and is listed, `.` when it answers 404 exactly as a series that does
/// not exist and is not listed, else `?`.
async fn seen_series(api: &Api, agent: &str, tenant: &str, address: &str, listed: bool) -> char {
    let path = format!("/api/v1/series/{agent}/{address}?tenant={tenant}");
    let (status, body) = api.get(&path).await.unwrap();
    match (status, listed) {
        (200, true) => 'Y',
        (404, false) => {
            let absent = format!("/api/v1/series/{agent}/127.0.99.99?tenant={tenant}");
            let (_, none) = api.get(&absent).await.unwrap();
            let same = body["error"].as_str().unwrap()
                == none["error"]
                    .as_str()
                    .unwrap()
                    .replace("127.0.99.99", address);
            if same { '.' } else { '?' }
        }
        _ => '?',
    }
}

/// The measurer dimension of the tenancy policy (`collector/src/read/access.rs`):
/// which agent measures (the viewer's own, a trusted tenant's, an operator
/// tenant's, an untrusted tenant's) × where (the viewer's granted prefix,
/// another tenant's prefix, nobody's). acme trusts initech; nobody trusts
/// globex; noc is the operator tenant. Each series is asked for by path
/// (200 or 404) and looked for in the targets list and the grids; a hidden
/// series must answer exactly as one that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_viewer_sees_follows_who_measures_and_where() {
    let (world, procs) = measured_world().await;
    // Rows: (agent, measurer, host); columns: the prefixes 0 (acme), 1
    // (globex), 2 (initech), 9 (nobody). `Y` seen, `.` hidden.
    let want: [(&str, [(&str, &str); 4]); 3] = [
        // acme: own agent everywhere; initech's (trusted) and noc's in
        // acme's prefix only; globex's nowhere.
        (
            "acme",
            [
                ("a1", "YYYY"),
                ("i1", "Y..."),
                ("n1", "Y..."),
                ("g1", "...."),
            ],
        ),
        // globex trusts nobody but the operators.
        (
            "globex",
            [
                ("a1", "...."),
                ("i1", "...."),
                ("n1", ".Y.."),
                ("g1", "YYYY"),
            ],
        ),
        (
            "initech",
            [
                ("a1", "...."),
                ("i1", "YYYY"),
                ("n1", "..Y."),
                ("g1", "...."),
            ],
        ),
    ];
    let mut got = String::new();
    let mut expected = String::new();
    for (viewer, rows) in want {
        let api = world.api(Some(&world.cert(viewer, Role::Viewer, "v")));
        let listed: Vec<(String, String)> = api.ok("/api/v1/targets?limit=1000").await["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["agent"].as_str().unwrap().to_owned(),
                    t["address"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (agent, cells) in rows {
            let (tenant, _, host) = AGENTS.iter().find(|a| a.1 == agent).unwrap();
            let mut line = String::new();
            for net in [0, 1, 2, 9] {
                let address = format!("127.0.{net}.{host}");
                let in_list = listed.contains(&(agent.to_owned(), address.clone()));
                let seen = seen_series(&api, agent, tenant, &address, in_list).await;
                line.push(seen);
            }
            let _ = writeln!(got, "{viewer:8} {agent}: {line}");
            let _ = writeln!(expected, "{viewer:8} {agent}: {cells}");
        }
        // The grid of globex's prefix agrees with the rows above.
        let monitored = match api.get("/api/v1/prefixes/127.0.1.0/24").await.unwrap() {
            (200, grid) => grid["monitored"].as_u64().unwrap(),
            (status, _) => {
                assert_eq!(status, 403, "{viewer}");
                0
            }
        };
        let _ = writeln!(got, "{viewer:8} grid 127.0.1.0/24: {monitored}");
        let want_grid = rows.iter().filter(|(_, c)| c.as_bytes()[1] == b'Y').count();
        let _ = writeln!(expected, "{viewer:8} grid 127.0.1.0/24: {want_grid}");
    }
    assert_eq!(got, expected, "\nwant:\n{expected}\ngot:\n{got}");
    drop(procs);
}
