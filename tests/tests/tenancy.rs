//! Tenant scoping of the HTTP API: a viewer sees its own tenant's agents and
//! events only, an operator tenant sees everything, an agent certificate
//! sees nothing, and asking for another tenant's agent reveals nothing.

use std::time::Duration;

use sonde_proto::Role;
use sonde_tests::{World, event_kinds, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_only_their_tenant_and_operators_see_all() {
    let world = World::new();
    world.collector_config("[access]\noperator-tenants = [\"noc\"]\n");
    let _collector = world.start_collector(&[]).await;

    let a1 = world.cert("tenant-a", Role::Agent, "a1");
    let b1 = world.cert("tenant-b", Role::Agent, "b1");
    world.agent_config("a1", &a1, "[heartbeat]\ninterval = \"200ms\"\n");
    world.agent_config("b1", &b1, "[heartbeat]\ninterval = \"200ms\"\n");
    let _agent_a = world.start_agent("a1", &[]);
    let _agent_b = world.start_agent("b1", &[]);

    let viewer_a = world.api(Some(&world.cert("tenant-a", Role::Viewer, "va")));
    let admin_b = world.api(Some(&world.cert("tenant-b", Role::Admin, "ab")));
    let noc = world.api(Some(&world.cert("noc", Role::Viewer, "ops")));
    let agent_api = world.api(Some(&a1));

    eventually(
        "both agents registered",
        Duration::from_secs(20),
        || async {
            let a = noc.agent("tenant-a", "a1").await?;
            let b = noc.agent("tenant-b", "b1").await?;
            (a["connected"] == true && b["connected"] == true).then_some(())
        },
    )
    .await;

    let names = |body: serde_json::Value| -> Vec<String> {
        body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{}/{}",
                    a["tenant"].as_str().unwrap(),
                    a["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(viewer_a.ok("/api/v1/agents").await),
        vec!["tenant-a/a1"]
    );
    assert_eq!(
        names(admin_b.ok("/api/v1/agents").await),
        vec!["tenant-b/b1"]
    );
    assert_eq!(
        names(noc.ok("/api/v1/agents").await),
        vec!["tenant-a/a1", "tenant-b/b1"]
    );

    let a_events = event_kinds(&viewer_a.events().await);
    assert_eq!(
        a_events,
        vec![("a1".to_owned(), "agent-registered".to_owned())]
    );
    let b_events = event_kinds(&admin_b.events().await);
    assert_eq!(
        b_events,
        vec![("b1".to_owned(), "agent-registered".to_owned())]
    );
    let mut all = event_kinds(&noc.events().await);
    all.sort();
    assert_eq!(
        all,
        vec![
            ("a1".to_owned(), "agent-registered".to_owned()),
            ("b1".to_owned(), "agent-registered".to_owned())
        ]
    );
    // Naming another tenant's agent yields nothing, not an error that
    // would confirm it exists.
    let body = viewer_a.ok("/api/v1/events?agent=b1").await;
    assert_eq!(body["events"], serde_json::json!([]));
    // Agent certificates may not read the API.
    let (status, body) = agent_api.get("/api/v1/agents").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("role agent"),
        "{body}"
    );
    // Bad parameters are named.
    let (status, body) = viewer_a.get("/api/v1/events?limit=abc").await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    let (status, body) = viewer_a
        .get("/api/v1/events?tenant=tenant-b")
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("tenant"), "{body}");
    let (status, _) = viewer_a.get("/api/v1/nothing").await.unwrap();
    assert_eq!(status, 404);
}
