use std::path::Path;

use super::*;

fn acme() -> Access {
    let tenancy = crate::read::access::Tenancy::default().grant("acme", &["10.82.0.0/24"]);
    Access::of_tenant(std::sync::Arc::new(tenancy), "acme")
}

fn agents() -> BTreeSet<String> {
    ["a1", "a2"].into_iter().map(String::from).collect()
}

fn request(json: serde_json::Value) -> Result<TargetRequest, String> {
    serde_json::from_value(json).map_err(|e| e.to_string())
}

fn check(json: serde_json::Value) -> Result<(String, Spec), String> {
    let access = acme();
    let agents = agents();
    let req = request(json)?;
    // The collector's resolver, as a table: one name in the grants, one
    // in another tenant's prefix, one with none.
    let resolved = match req.target.as_str() {
        "gw.example.net" => Some(Ok(vec!["10.82.0.9".parse().unwrap()])),
        "theirs.example.net" => Some(Ok(vec![
            "10.82.0.9".parse().unwrap(),
            "10.9.9.9".parse().unwrap(),
        ])),
        "nowhere.example.net" => Some(Err("no such host".to_owned())),
        _ => None,
    };
    let cx = Context {
        access: &access,
        agents: &agents,
        max_retention: Duration::from_secs(7 * 86_400),
        resolved: resolved.as_ref(),
    };
    req.validate(&cx)
}

#[test]
fn numeric_spellings_and_names_of_other_addresses_hit_the_grant() {
    for spelling in [
        "168364297",
        "012.011.011.011",
        "10.011.9.011",
        "0x0a090909",
        "10.9.2313",
    ] {
        let err = check(json!({"name": "n", "target": spelling, "kind": "ping"})).unwrap_err();
        assert_eq!(
            err, "target: 10.9.9.9 is not inside a prefix granted to tenant acme (10.82.0.0/24)",
            "{spelling}"
        );
    }
    // Not a number a resolver reads (9 is no octal digit): refused.
    let err = check(json!({"name": "n", "target": "10.009.009.009", "kind": "ping"})).unwrap_err();
    assert!(
        err.contains("not an address, a CIDR range or a host name"),
        "{err}"
    );
    // The same spelling of a granted address is taken, as the address.
    let (_, spec) = check(json!({"name": "n", "target": "0x0a520007", "kind": "ping"})).unwrap();
    assert_eq!(spec.target, "10.82.0.7");
    let err =
        check(json!({"name": "n", "target": "theirs.example.net", "kind": "ping"})).unwrap_err();
    assert_eq!(
        err,
        "target: theirs.example.net (resolves to 10.9.9.9) is not inside a prefix granted to tenant acme (10.82.0.0/24)"
    );
    let err =
        check(json!({"name": "n", "target": "nowhere.example.net", "kind": "ping"})).unwrap_err();
    assert!(
        err.contains("does not resolve at the collector: no such host"),
        "{err}"
    );
    assert!(
        check(json!({"name": "n", "target": "gw.example.net", "kind": "tcp", "port": 22})).is_ok()
    );
}

#[test]
fn defaults_follow_the_agent_config() {
    let (name, spec) =
        check(json!({"name": " web ", "target": "10.82.0.7", "kind": "ping"})).unwrap();
    assert_eq!(name, "web");
    assert_eq!(spec.interval, Duration::from_secs(1));
    assert_eq!(spec.timeout, Duration::from_secs(1));
    assert!(spec.agents.is_empty() && spec.retention.is_none());
    let (_, tcp) = check(json!({"name": "t", "target": "10.82.0.0/30", "kind": "tcp", "port": 443, "agents": ["a2", "a1", "a2"]})).unwrap();
    assert_eq!(tcp.interval, Duration::from_secs(10));
    assert_eq!(tcp.series_target(), "10.82.0.0/30:443");
    assert_eq!(tcp.agents, ["a1", "a2"], "sorted, duplicates dropped");
    assert!(tcp.runs_on("a1") && !tcp.runs_on("a3"));
    let (_, trace) = check(json!({"name": "r", "target": "gw.example.net", "kind": "trace", "interval": "10m", "retention": "2d"})).unwrap();
    assert_eq!(trace.interval, Duration::from_secs(600));
    assert_eq!(trace.timeout, Duration::from_secs(2));
    assert_eq!(trace.retention, Some(Duration::from_secs(2 * 86_400)));
    let p = trace.probes();
    assert_eq!(p.trace.len(), 1);
    assert_eq!((p.trace[0].max_hops, p.trace[0].port), (30, 33434));
}

#[test]
fn mistakes_are_named() {
    let cases = [
        (
            json!({"name": "", "target": "10.82.0.7", "kind": "ping"}),
            "name: must be 1 to 100",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "icmp"}),
            "unknown variant `icmp`",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "ping", "colour": 1}),
            "unknown field `colour`",
        ),
        (
            json!({"name": "x", "target": "not a host!", "kind": "ping"}),
            "target: target \"not a host!\": not an address",
        ),
        (
            json!({"name": "x", "target": "10.9.9.9", "kind": "ping"}),
            "target: 10.9.9.9 is not inside a prefix granted to tenant acme (10.82.0.0/24)",
        ),
        (
            json!({"name": "x", "target": "10.82.0.0/16", "kind": "ping"}),
            "target: 10.82.0.0/16 is not inside a prefix granted",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "tcp"}),
            "port: a tcp target needs a port",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "ping", "port": 80}),
            "port: ping targets have no port",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "ping", "interval": "often"}),
            "interval: \"often\" is not a duration",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "ping", "interval": "10ms"}),
            "interval: must be between 100ms and 24h",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "trace", "interval": "500ms"}),
            "interval: must be between 1s and 24h",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "tcp", "port": 22, "timeout": "2m"}),
            "timeout: must be between 1ms and 60s",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "ping", "retention": "30d"}),
            "retention: must be between 1h and the collector's [retention] aggregates (7days)",
        ),
        (
            json!({"name": "x", "target": "10.82.0.7", "kind": "ping", "agents": ["a9"]}),
            "agents: \"a9\" is not an agent of this tenant (known: a1, a2)",
        ),
    ];
    for (json, want) in cases {
        let err = check(json.clone()).expect_err(&json.to_string());
        assert!(err.contains(want), "{json}: {err:?} lacks {want:?}");
    }
}

#[test]
fn tenants_stay_in_their_lane() {
    let access = acme();
    let mut req = request(json!({"name": "x", "target": "10.82.0.7", "kind": "ping"})).unwrap();
    assert_eq!(req.tenant_for(&access).unwrap(), "acme");
    req.tenant = Some("globex".into());
    let err = req.tenant_for(&access).unwrap_err();
    assert!(
        err.contains("only manage targets of your own tenant (acme), not \"globex\""),
        "{err}"
    );
    let op = Access::of_tenant(
        std::sync::Arc::new(crate::read::access::Tenancy::default().operator("ops")),
        "ops",
    );
    assert_eq!(req.tenant_for(&op).unwrap(), "globex");
}

fn managed(id: i64, tenant: &str, json: serde_json::Value, enabled: bool) -> ManagedTarget {
    let (name, spec) = check(json).unwrap();
    ManagedTarget {
        id,
        tenant: tenant.into(),
        name,
        spec,
        enabled,
        author: "sonde://acme/admin/ann".into(),
        created_ms: 0,
        updated_ms: 0,
    }
}

#[test]
fn assignment_follows_tenant_agents_and_enabled() {
    let all = vec![
        managed(
            1,
            "acme",
            json!({"name": "all", "target": "10.82.0.1", "kind": "ping"}),
            true,
        ),
        managed(
            2,
            "acme",
            json!({"name": "a2 only", "target": "10.82.0.2", "kind": "tcp", "port": 22, "agents": ["a2"]}),
            true,
        ),
        managed(
            3,
            "acme",
            json!({"name": "off", "target": "10.82.0.3", "kind": "ping"}),
            false,
        ),
        managed(
            4,
            "globex",
            json!({"name": "theirs", "target": "10.82.0.4", "kind": "ping"}),
            true,
        ),
    ];
    let grants: Vec<ipnet::IpNet> = vec!["10.82.0.0/24".parse().unwrap()];
    let a1 = assigned(&all, "acme", "a1", Some(&grants));
    assert_eq!(a1.ping.len(), 1);
    assert_eq!(a1.ping[0].within.as_deref(), Some(&grants[..]));
    assert_eq!(a1.ping[0].targets[0].to_string(), "10.82.0.1");
    assert!(a1.tcp.is_empty());
    let a2 = assigned(&all, "acme", "a2", Some(&grants));
    assert_eq!(a2.tcp[0].within.as_deref(), Some(&grants[..]));
    assert_eq!((a2.ping.len(), a2.tcp.len()), (1, 1));
    assert_eq!(a2.tcp[0].targets[0].to_string(), "10.82.0.2:22");
    let g = assigned(&all, "globex", "a1", None);
    assert_eq!(g.ping[0].targets[0].to_string(), "10.82.0.4");
    assert_eq!(g.ping[0].within, None, "an operator tenant probes anywhere");
}

#[test]
fn store_round_trip_names_unique_per_tenant() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let (name, spec) =
        check(json!({"name": "web", "target": "10.82.0.7", "kind": "ping"})).unwrap();
    let ch = |name: &str, spec: &Spec, enabled, author: &str, at_ms| Change {
        name: name.into(),
        spec: spec.clone(),
        enabled,
        author: author.into(),
        at_ms,
    };
    let t = insert(
        &store,
        "acme",
        &ch(&name, &spec, true, "sonde://acme/admin/ann", 5),
    )
    .unwrap();
    assert_eq!((t.id, t.created_ms, t.updated_ms), (1, 5, 5));
    let err = insert(&store, "acme", &ch(&name, &spec, true, "x", 6)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant acme already has a target named \"web\""
    );
    insert(&store, "globex", &ch(&name, &spec, true, "x", 6)).unwrap();
    let (_, spec2) =
        check(json!({"name": "web", "target": "10.82.0.8", "kind": "ping", "interval": "5s"}))
            .unwrap();
    let u = update(
        &store,
        1,
        &ch("web2", &spec2, false, "sonde://acme/admin/bob", 9),
    )
    .unwrap();
    assert_eq!(
        (u.name.as_str(), u.enabled, u.created_ms, u.updated_ms),
        ("web2", false, 5, 9)
    );
    assert_eq!(u.spec.interval, Duration::from_secs(5));
    assert_eq!(load(&store).unwrap().len(), 2);
    delete(&store, 1).unwrap();
    assert!(matches!(delete(&store, 1), Err(ChangeError::NotFound(1))));
    assert!(matches!(
        update(&store, 1, &ch("x", &spec2, true, "x", 1)),
        Err(ChangeError::NotFound(1))
    ));
    assert_eq!(load(&store).unwrap().len(), 1);
}

#[test]
fn retention_deletes_only_the_targets_old_history() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let now_ns = 100 * HOUR_NS;
    store
        .with(|c| {
            c.execute_batch(
                "INSERT INTO series (id, tenant, agent, probe, target, first_ns) VALUES
                    (1, 'acme', 'a1', 'ping', '10.82.0.7', 0),
                    (2, 'acme', 'a1', 'ping', '10.82.0.8', 0),
                    (3, 'globex', 'a1', 'ping', '10.82.0.7', 0);",
            )?;
            for id in 1..=3 {
                for hour in [90i64, 97, 99] {
                    c.execute(
                        "INSERT INTO minute_buckets VALUES (?1, ?2, 1, 0, 1.0, 1.0, 1.0, 1.0)",
                        params![id, hour * 60],
                    )?;
                    c.execute(
                        "INSERT INTO hour_buckets VALUES (?1, ?2, 1, 0, 1.0, 1.0, 1.0, 1.0)",
                        params![id, hour],
                    )?;
                }
            }
            Ok(())
        })
        .unwrap();
    let t = managed(
        1,
        "acme",
        json!({"name": "w", "target": "10.82.0.7", "kind": "ping", "retention": "5h"}),
        true,
    );
    let no_retention = managed(
        2,
        "acme",
        json!({"name": "v", "target": "10.82.0.8", "kind": "ping"}),
        true,
    );
    // Hour 90 is past 5 h for series 1 only: one minute and one hour row.
    assert_eq!(
        apply_retention(&store, &[t.clone(), no_retention], now_ns).unwrap(),
        2
    );
    assert_eq!(apply_retention(&store, &[t], now_ns).unwrap(), 0);
    let left: Vec<(i64, i64)> = store
        .with_read(|c| {
            let mut s =
                c.prepare("SELECT series_id, count(*) FROM minute_buckets GROUP BY series_id")?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
        .unwrap();
    assert_eq!(left, [(1, 2), (2, 3), (3, 3)]);
}

#[test]
fn quotas_name_the_limit() {
    let q = crate::config::Quotas {
        max_series: 1000,
        max_definitions: 3,
        max_addresses: 300,
    };
    let used = Usage {
        definitions: 0,
        series: 10,
        agents: 2,
    };
    let (_, slash24) =
        check(json!({"name": "n", "target": "10.82.0.0/24", "kind": "ping"})).unwrap();
    // 254 addresses × 2 agents + 10 in use: inside every limit.
    assert_eq!(check_quota(&slash24, &q, used), Ok(()));
    let err = check_quota(
        &slash24,
        &q,
        Usage {
            series: 600,
            ..used
        },
    )
    .unwrap_err();
    assert!(
        err.starts_with("max-series: 254 addresses on 2 agents make 508 series"),
        "{err}"
    );
    let err = check_quota(
        &slash24,
        &q,
        Usage {
            definitions: 3,
            ..used
        },
    )
    .unwrap_err();
    assert!(err.starts_with("max-definitions:"), "{err}");
    let small = crate::config::Quotas {
        max_addresses: 100,
        ..q
    };
    let err = check_quota(&slash24, &small, used).unwrap_err();
    assert_eq!(
        err,
        "max-addresses: 10.82.0.0/24 has 254 addresses, a definition may have 100"
    );
}
