//! The engine's semantics on explicit times (grouping, resolution,
//! repeat, flapping, silences, dependencies, one-off alerts), and the
//! engine task on tokio's paused clock across a weekend and a DST change.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sonde_runtime::config::Source;

use super::engine::{Engine, Status, status};
use super::message::Message;
use super::rules::{Update, alert, from_event};
use super::silence::Silence;
use super::*;
use crate::store::{AgentKey, EventKind, EventRow};

const TLS: &str = "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";

fn config(alerting: &str) -> Config {
    Source::from_text(Path::new("t.toml"), format!("{TLS}{alerting}"))
        .parse()
        .unwrap()
}

const BASIC: &str = r#"
[[tenant]]
name = "acme"
prefixes = ["10.1.2.0/24"]
[[tenant]]
name = "globex"
prefixes = ["10.1.2.0/24"]
trust = ["acme"]
[alerting]
[[alerting.route]]
receiver = "ops"
group-wait = "30s"
group-interval = "5m"
repeat-interval = "4h"
[[alerting.receiver]]
name = "ops"
[alerting.receiver.discord]
url = "http://127.0.0.1:9/hook"
"#;

fn event(
    id: i64,
    at_ms: i64,
    agent: &str,
    kind: EventKind,
    detail: serde_json::Value,
    prefix: Option<&str>,
) -> EventRow {
    EventRow {
        id,
        at_ms,
        tenant: "acme".into(),
        agent: agent.into(),
        kind,
        detail,
        prefix: prefix.map(str::to_owned),
    }
}

fn outage(
    id: i64,
    at: i64,
    kind: EventKind,
    scope: &str,
    subject: &str,
    agent: &str,
    prefix: Option<&str>,
) -> EventRow {
    event(
        id,
        at,
        agent,
        kind,
        json!({"scope": scope, "subject": subject, "series": 1, "outage": id}),
        prefix,
    )
}

/// Applies `events` at `at`, ticks at `at`, returns the messages.
fn step(
    e: &mut Engine,
    c: &Config,
    events: &[EventRow],
    silences: &[Silence],
    at: i64,
) -> Vec<Message> {
    for ev in events {
        for u in from_event(c, &c.tenancy(), ev) {
            e.apply(&c.alerting, u, at);
        }
    }
    e.tick(&c.alerting, silences, at);
    e.take_changes().messages
}

const S: i64 = 1000;
const T0: i64 = 1_800_000_000_000;

#[test]
fn a_dead_prefix_is_one_notification_per_tenant_then_one_resolution() {
    let c = config(BASIC);
    let mut e = Engine::default();
    // 200 targets of one /24 reported as target outages (the correlator
    // would make it one prefix outage; grouping must hold either way).
    let starts: Vec<EventRow> = (0..200)
        .map(|i| {
            outage(
                i,
                T0,
                EventKind::OutageStart,
                "target",
                &format!("10.1.2.{i}"),
                "edge-1",
                Some("10.1.2.0/24"),
            )
        })
        .collect();
    assert!(step(&mut e, &c, &starts[..100], &[], T0).is_empty());
    assert!(step(&mut e, &c, &starts[100..], &[], T0 + 10 * S).is_empty());
    let m = step(&mut e, &c, &[], &[], T0 + 30 * S);
    // One message per tenant granted the prefix, each with all 200.
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(
        m.iter()
            .all(|m| m.firing.len() == 200 && m.resolved.is_empty())
    );
    let tenants: Vec<&str> = m.iter().map(|m| m.group["tenant"].as_str()).collect();
    assert_eq!(tenants, ["acme", "globex"]);
    assert!(
        m[0].title()
            .starts_with("[FIRING:200] acme: target 10.1.2."),
        "{}",
        m[0].title()
    );
    // Nothing new: no message at the next flushes.
    assert!(step(&mut e, &c, &[], &[], T0 + 330 * S).is_empty());
    let ends: Vec<EventRow> = (0..200)
        .map(|i| {
            outage(
                1000 + i,
                T0 + 400 * S,
                EventKind::OutageEnd,
                "target",
                &format!("10.1.2.{i}"),
                "edge-1",
                Some("10.1.2.0/24"),
            )
        })
        .collect();
    assert!(step(&mut e, &c, &ends, &[], T0 + 400 * S).is_empty());
    let m = step(&mut e, &c, &[], &[], T0 + 630 * S);
    assert_eq!(m.len(), 2);
    assert!(
        m.iter()
            .all(|m| m.resolved.len() == 200 && m.firing.is_empty())
    );
    let title = m[0].title();
    assert!(
        title.starts_with("[RESOLVED:200] acme: target 10.1.2.")
            && title.ends_with(" is up again (+199 more)"),
        "{title}"
    );
    // The groups are gone; nothing more.
    assert!(e.groups.is_empty());
    assert!(step(&mut e, &c, &[], &[], T0 + 2000 * S).is_empty());
}

#[test]
fn repeat_interval_and_a_blip_shorter_than_group_wait() {
    let c = config(BASIC);
    let mut e = Engine::default();
    let missing = event(
        1,
        T0,
        "edge-1",
        EventKind::AgentMissing,
        json!({"silent_for_ms": 30_000}),
        None,
    );
    let back = event(2, T0, "edge-1", EventKind::AgentBack, json!({}), None);
    // Missing and back within group-wait: nobody is paged.
    step(&mut e, &c, std::slice::from_ref(&missing), &[], T0);
    step(&mut e, &c, &[back], &[], T0 + 10 * S);
    assert!(step(&mut e, &c, &[], &[], T0 + 30 * S).is_empty());
    // Missing for good: one page, repeated after 4 h, not before.
    step(&mut e, &c, &[missing], &[], T0 + 100 * S);
    let m = step(&mut e, &c, &[], &[], T0 + 130 * S);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].firing[0].labels["rule"], "agent-missing");
    let mut repeats = 0;
    for k in 1..=48 {
        repeats += step(&mut e, &c, &[], &[], T0 + 130 * S + k * 300 * S).len();
    }
    assert_eq!(repeats, 1, "4 h of 5-minute flushes repeat once");
}

#[test]
fn flapping_is_one_notification_until_stable() {
    let c = config(BASIC); // max-flips 4 in 15 min
    let mut e = Engine::default();
    let mut sent = Vec::new();
    let mut t = T0;
    for i in 0..10 {
        let kind = if i % 2 == 0 {
            EventKind::AgentMissing
        } else {
            EventKind::AgentBack
        };
        let ev = event(i, t, "edge-1", kind, json!({}), None);
        sent.extend(step(&mut e, &c, &[ev], &[], t));
        t += 40 * S;
        sent.extend(step(&mut e, &c, &[], &[], t));
    }
    // The first firing; within the next group interval it flipped four
    // more times: one flapping notification, then nothing.
    let kinds: Vec<String> = sent.iter().map(Message::title).collect();
    assert_eq!(sent.len(), 2, "{kinds:#?}");
    assert!(kinds[0].starts_with("[FIRING:1]"), "{kinds:#?}");
    assert!(kinds[1].starts_with("[FLAPPING:1]"), "{kinds:#?}");
    let fp = sent[0].firing[0].fingerprint.clone();
    assert!(e.alerts[&fp].flapping);
    // Last event was "back": stable for the window → one resolved message.
    let after: Vec<Message> = (1..=8)
        .flat_map(|k| step(&mut e, &c, &[], &[], t + k * 300 * S))
        .collect();
    assert_eq!(after.len(), 1, "{after:#?}");
    assert!(after[0].title().starts_with("[RESOLVED:1]"));
    assert_eq!(after[0].resolved[0].fingerprint, fp);
    // Done with: no longer held in memory (it stays in the store's history).
    assert!(e.alerts.get(&fp).is_none_or(|a| !a.flapping && !a.firing));
}

#[test]
fn silences_mute_and_their_end_unmutes() {
    let c = config(BASIC);
    let mut e = Engine::default();
    let missing = event(1, T0, "edge-1", EventKind::AgentMissing, json!({}), None);
    let probe = alert(
        "acme",
        "agent-missing",
        Severity::Critical,
        vec![("agent", "edge-1".into())],
        String::new(),
        String::new(),
        T0,
    );
    let silence = Silence {
        id: 7,
        tenant: Some("acme".into()),
        matchers: vec![Matcher::parse("agent=edge-1").unwrap()],
        starts_ms: T0,
        ends_ms: T0 + 3600 * S,
        author: "acme/admin/ann".into(),
        comment: "maintenance".into(),
        created_ms: T0,
        expired_by: None,
    };
    let s = [silence];
    step(&mut e, &c, &[missing], &s, T0);
    assert!(step(&mut e, &c, &[], &s, T0 + 30 * S).is_empty());
    let groups: Vec<_> = e.groups.values().collect();
    let sup = suppress::suppressed(e.alerts.values());
    assert_eq!(
        status(
            &e.alerts[&probe.fingerprint],
            &groups,
            &s,
            &sup,
            T0 + 60 * S
        ),
        Status::Silenced
    );
    // Still silenced at every flush of the hour.
    for k in 1..12 {
        assert!(step(&mut e, &c, &[], &s, T0 + 30 * S + k * 300 * S).is_empty());
    }
    // Expired: the next flush notifies it.
    let m = step(&mut e, &c, &[], &s, T0 + 3630 * S);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].firing[0].fingerprint, probe.fingerprint);
    let groups: Vec<_> = e.groups.values().collect();
    assert_eq!(
        status(
            &e.alerts[&probe.fingerprint],
            &groups,
            &s,
            &sup,
            T0 + 3630 * S
        ),
        Status::Firing
    );
}

#[test]
fn a_missing_agent_suppresses_its_own_targets_not_others() {
    let c = config(BASIC);
    let mut e = Engine::default();
    let evs = [
        event(1, T0, "edge-1", EventKind::AgentMissing, json!({}), None),
        outage(
            2,
            T0,
            EventKind::OutageStart,
            "path",
            "acme/edge-1 → 10.1.2.9",
            "edge-1",
            Some("10.1.2.0/24"),
        ),
        outage(
            3,
            T0,
            EventKind::OutageStart,
            "agent-network",
            "acme/edge-1",
            "edge-1",
            None,
        ),
        outage(
            4,
            T0,
            EventKind::OutageStart,
            "path",
            "acme/edge-2 → 10.1.2.9",
            "edge-2",
            Some("10.1.2.0/24"),
        ),
    ];
    step(&mut e, &c, &evs, &[], T0);
    let m = step(&mut e, &c, &[], &[], T0 + 30 * S);
    let notified: Vec<(String, String, String)> = m
        .iter()
        .filter(|m| m.group["tenant"] == "acme")
        .flat_map(|m| &m.firing)
        .map(|a| {
            (
                a.labels["rule"].clone(),
                a.labels["agent"].clone(),
                a.labels.get("scope").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        notified,
        vec![
            ("agent-missing".into(), "edge-1".into(), String::new()),
            ("outage".into(), "edge-2".into(), "path".into()),
        ]
    );
}

#[test]
fn a_tenant_is_paged_only_for_measurements_it_trusts() {
    // globex is granted the prefix but does not trust acme: acme's route
    // change and latency there page acme alone.
    let c = config(&BASIC.replace("trust = [\"acme\"]\n", ""));
    let mut e = Engine::default();
    let change = event(
        1,
        T0,
        "edge-1",
        EventKind::RouteChange,
        json!({"target": "10.1.2.9", "address": "10.1.2.9",
               "old": {"hops": [1, 2]}, "new": {"hops": [1, 2, 3]}}),
        Some("10.1.2.0/24"),
    );
    step(&mut e, &c, std::slice::from_ref(&change), &[], T0);
    let m = step(&mut e, &c, &[], &[], T0 + 30 * S);
    let tenants: Vec<&str> = m.iter().map(|m| m.group["tenant"].as_str()).collect();
    assert_eq!(tenants, ["acme"]);
    let minute = |unit: i64| crate::consumers::alert::latency::Minute {
        tenant: "acme".into(),
        agent: "edge-1".into(),
        probe: "ping".into(),
        target: "10.1.2.9".into(),
        address: Some("10.1.2.9".into()),
        unit,
        probes: 10,
        lost: 0,
        sum_ms: 10.0 * 500.0,
    };
    let mut latency = config(&BASIC.replace("trust = [\"acme\"]\n", ""));
    latency.alerting.rules.latency.enabled = true;
    let minutes: Vec<_> = (0..5).map(minute).collect();
    let fired = crate::consumers::alert::latency::evaluate(&latency, &minutes, 5);
    let paged: Vec<String> = fired
        .iter()
        .filter_map(|u| match u {
            Update::Fire { alert, .. } => Some(alert.labels["tenant"].clone()),
            Update::Resolve { .. } => None,
        })
        .collect();
    assert_eq!(paged, ["acme"]);
    // Trusted: both.
    let mut trusting = config(BASIC);
    trusting.alerting.rules.latency.enabled = true;
    assert_eq!(
        crate::consumers::alert::latency::evaluate(&trusting, &minutes, 5).len(),
        2
    );
}

#[test]
fn one_off_alerts_fire_once_and_leave_without_resolution() {
    let c = config(BASIC); // route-change hold 1 h
    let mut e = Engine::default();
    let change = event(
        1,
        T0,
        "edge-1",
        EventKind::RouteChange,
        json!({"target": "10.1.2.9", "old": {"hops": [1, 2]}, "new": {"hops": [1, 2, 3]}}),
        Some("10.1.2.0/24"),
    );
    step(&mut e, &c, std::slice::from_ref(&change), &[], T0);
    let m = step(&mut e, &c, &[], &[], T0 + 30 * S);
    assert_eq!(m.len(), 2); // acme and globex (granted the prefix)
    assert!(
        m[0].firing[0].summary.contains("2 hops → 3 hops"),
        "{:?}",
        m[0].firing[0].summary
    );
    let later: usize = (1..=24)
        .map(|k| step(&mut e, &c, &[], &[], T0 + 30 * S + k * 300 * S).len())
        .sum();
    assert_eq!(later, 0, "no resolved message for a one-off change");
    assert!(e.alerts.values().all(|a| !a.firing));
}

#[test]
fn open_port_rule_respects_min_risk_and_port_closed_resolves() {
    let c = config(&format!(
        "{BASIC}\n[alerting.rules.open-port]\nmin-risk = \"medium\"\n"
    ));
    let port = |risk: &str, port: u32| json!({"protocol": "tcp", "address": "0.0.0.0", "port": port, "program": "socat", "service": "x", "risk": risk});
    let evs = [
        event(
            1,
            T0,
            "edge-1",
            EventKind::PortOpened,
            port("low", 80),
            None,
        ),
        event(
            2,
            T0,
            "edge-1",
            EventKind::PortOpened,
            port("medium", 81),
            None,
        ),
        event(
            3,
            T0,
            "edge-1",
            EventKind::PortOpened,
            port("high", 23),
            None,
        ),
    ];
    let fired: Vec<String> = evs
        .iter()
        .flat_map(|ev| from_event(&c, &c.tenancy(), ev))
        .filter_map(|u| match u {
            Update::Fire { alert, .. } => Some(alert.labels["port"].clone()),
            Update::Resolve { .. } => None,
        })
        .collect();
    assert_eq!(fired, ["tcp/0.0.0.0:81", "tcp/0.0.0.0:23"]);
    let mut e = Engine::default();
    step(&mut e, &c, &evs, &[], T0);
    step(
        &mut e,
        &c,
        &[event(
            4,
            T0,
            "edge-1",
            EventKind::PortClosed,
            port("high", 23),
            None,
        )],
        &[],
        T0 + S,
    );
    let firing: Vec<&str> = e
        .alerts
        .values()
        .filter(|a| a.firing)
        .map(|a| a.label("port"))
        .collect();
    assert_eq!(firing, ["tcp/0.0.0.0:81"]);
}

#[test]
fn fingerprints_are_stable_and_ignore_severity() {
    let a = alert(
        "acme",
        "agent-missing",
        Severity::Critical,
        vec![("agent", "edge-1".into())],
        String::new(),
        String::new(),
        0,
    );
    let b = alert(
        "acme",
        "agent-missing",
        Severity::Info,
        vec![("agent", "edge-1".into())],
        String::new(),
        String::new(),
        5,
    );
    assert_eq!(a.fingerprint, b.fingerprint);
    // Pinned: a change of the hash would re-page every firing alert
    // after an upgrade.
    // (FNV-1a 64 of "agent=edge-1\nrule=agent-missing\ntenant=acme\n",
    // computed independently.)
    assert_eq!(a.fingerprint, "63a90c9e0bf11946");
    assert_eq!(
        fingerprint(&a.labels),
        a.fingerprint,
        "severity is left out"
    );
    assert_eq!(a.fingerprint.len(), 16);
    let key = AgentKey {
        tenant: "acme".into(),
        name: "edge-2".into(),
    };
    let c = alert(
        &key.tenant,
        "agent-missing",
        Severity::Critical,
        vec![("agent", key.name.clone())],
        String::new(),
        String::new(),
        0,
    );
    assert_ne!(a.fingerprint, c.fingerprint);
}

#[tokio::test(start_paused = true)]
#[allow(clippy::too_many_lines)]
async fn business_hours_defer_over_a_weekend_and_a_dst_change() {
    use crate::store::Store;
    // Friday 2026-10-23 20:00 UTC = 22:00 in Paris (UTC+2); summer time
    // ends on Sunday the 25th; Monday 09:00 Paris is 08:00 UTC.
    let friday = chrono::DateTime::parse_from_rfc3339("2026-10-23T20:00:00Z")
        .unwrap()
        .timestamp_millis();
    let monday_open = chrono::DateTime::parse_from_rfc3339("2026-10-26T08:00:00Z")
        .unwrap()
        .timestamp_millis();
    let c = config(
        r#"
[alerting]
poll = "1m"
[[alerting.schedule]]
name = "office"
timezone = "Europe/Paris"
days = ["mon-fri"]
start = "09:00"
end = "18:00"
[[alerting.route]]
tenant = "acme"
receiver = "ops"
schedule = "office"
group-wait = "30s"
group-interval = "5m"
[[alerting.receiver]]
name = "ops"
[alerting.receiver.discord]
url = "http://127.0.0.1:9/hook"
"#,
    );
    let store = Store::open(Path::new(":memory:")).unwrap();
    let clock = Clock::at(friday * 1_000_000);
    let handle = Handle::new(clock);
    let (_tx, settings) = watch::channel(Arc::new(c));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(store.clone(), settings, handle.clone(), stop.clone()));
    let key = AgentKey {
        tenant: "acme".into(),
        name: "edge-1".into(),
    };
    let record = |kind: EventKind, detail: serde_json::Value, prefix: Option<&'static str>| {
        let (store, key) = (store.clone(), key.clone());
        let now = clock.now_ms();
        store
            .with(|c| crate::store::insert_event(c, now, &key, kind, &detail, prefix))
            .unwrap();
    };
    // Night: the agent goes missing, and a target is down for an hour.
    record(
        EventKind::AgentMissing,
        json!({"silent_for_ms": 30_000}),
        None,
    );
    record(
        EventKind::OutageStart,
        json!({"scope": "target", "subject": "10.1.2.3", "series": 1}),
        Some("10.1.2.0/24"),
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    record(
        EventKind::OutageEnd,
        json!({"scope": "target", "subject": "10.1.2.3", "series": 1}),
        Some("10.1.2.0/24"),
    );
    let queued = |store: &Store| state::recent_notifications(store, None, 100).unwrap();
    // Through the weekend: nothing is sent, both are listed as deferred.
    tokio::time::sleep(Duration::from_secs(2 * 86_400)).await;
    assert!(queued(&store).is_empty());
    let alerts = state::alerts(&store, Some("acme"), 0).unwrap();
    let groups = state::groups(&store).unwrap();
    let refs: Vec<&dispatch::Group> = groups.iter().collect();
    let missing = alerts.iter().find(|a| a.rule() == "agent-missing").unwrap();
    assert_eq!(
        status(
            missing,
            &refs,
            &[],
            &std::collections::HashMap::<String, String>::new(),
            clock.now_ms()
        ),
        Status::Deferred
    );
    // Monday 07:59 UTC (08:59 Paris, winter time now): still nothing.
    let until = |t: i64| Duration::from_millis(u64::try_from(t - clock.now_ms()).unwrap());
    tokio::time::sleep(until(monday_open - 60_000)).await;
    assert!(queued(&store).is_empty());
    tokio::time::sleep(until(monday_open + 1000)).await;
    let sent = queued(&store);
    assert_eq!(sent.len(), 2, "{sent:#?}");
    for n in &sent {
        assert_eq!(n.created_ms, monday_open, "sent when the office opens");
        assert!(n.message.deferred_since_ms.is_some());
    }
    let firing = sent.iter().find(|n| !n.message.firing.is_empty()).unwrap();
    assert_eq!(firing.message.firing[0].labels["rule"], "agent-missing");
    let summary = sent
        .iter()
        .find(|n| !n.message.resolved_while_deferred.is_empty())
        .unwrap();
    assert_eq!(
        summary.message.resolved_while_deferred[0].labels["target"],
        "10.1.2.3"
    );
    assert!(summary.message.firing.is_empty() && summary.message.resolved.is_empty());
    assert!(
        summary
            .message
            .text()
            .contains("Fired and resolved outside the schedule")
    );
    // Once: an hour later nothing more was queued.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(queued(&store).len(), 2);
    stop.cancel();
    task.await.unwrap();
}

#[test]
fn latency_rule_fires_on_n_of_m_minutes_for_each_tenant() {
    use super::latency::{Minute, evaluate};
    let c = config(&format!(
        "{BASIC}\n[alerting.rules.latency]\nenabled = true\nthreshold = \"100ms\"\nminutes = 3\nof = 5\n\
         [[alerting.tenant]]\nname = \"globex\"\n[alerting.tenant.latency]\nenabled = false\n"
    ));
    // Minutes 10..15 (to = 15): mean RTT per minute, 10 probes each.
    let series = |target: &str, means: &[f64]| -> Vec<Minute> {
        means
            .iter()
            .enumerate()
            .map(|(i, m)| Minute {
                tenant: "acme".into(),
                agent: "edge-1".into(),
                probe: "ping".into(),
                target: target.into(),
                address: Some(target.into()),
                unit: 10 + i64::try_from(i).unwrap(),
                probes: 10,
                lost: 2,
                sum_ms: m * 8.0,
            })
            .collect()
    };
    let mut minutes = series("10.1.2.3", &[150.0, 20.0, 120.0, 101.0, 30.0]);
    minutes.extend(series("10.1.2.4", &[150.0, 20.0, 120.0, 99.0, 30.0]));
    // An older minute (outside the window) does not count.
    minutes.extend(
        series(
            "10.1.2.5",
            &[500.0, 500.0, 500.0, 20.0, 20.0, 20.0, 20.0, 20.0],
        )
        .into_iter()
        .map(|mut m| {
            m.unit -= 3;
            m
        }),
    );
    let fired: Vec<(String, String)> = evaluate(&c, &minutes, 15)
        .into_iter()
        .filter_map(|u| match u {
            Update::Fire { alert, .. } => {
                Some((alert.tenant().to_owned(), alert.label("target").to_owned()))
            }
            Update::Resolve { .. } => None,
        })
        .collect();
    // 3 of 5 above for .3 only; globex (granted the prefix) turned it off.
    assert_eq!(fired, [("acme".to_owned(), "10.1.2.3".to_owned())]);
}

#[test]
fn change_rules_fire_one_offs_with_their_labels() {
    let c = config(BASIC);
    let ip = event(
        1,
        T0,
        "edge-1",
        EventKind::IpChanged,
        json!({"family": "ipv4", "old": "192.0.2.1", "new": "192.0.2.9"}),
        None,
    );
    let remote = event(
        2,
        T0,
        "edge-1",
        EventKind::RemotePortOpened,
        json!({"target": "gw:22", "ports": [22], "open": [22]}),
        None,
    );
    let mut got = Vec::new();
    for ev in [ip, remote] {
        for u in from_event(&c, &c.tenancy(), &ev) {
            let Update::Fire { alert, hold_ms } = u else {
                panic!("fires")
            };
            assert_eq!(hold_ms, Some(3_600_000), "one-off, held 1 h");
            got.push((alert.rule().to_owned(), alert.summary));
        }
    }
    assert_eq!(got[0].0, "public-ip-change");
    assert!(
        got[0].1.contains("from 192.0.2.1 to 192.0.2.9"),
        "{}",
        got[0].1
    );
    assert_eq!(got[1].0, "remote-ports");
    assert!(got[1].1.contains("ports [22] opened"), "{}", got[1].1);
}

/// A route held back by its schedule until 09:00 UTC; `T0` is 08:00 UTC.
const HELD: &str = r#"
[alerting]
[[alerting.schedule]]
name = "day"
cron = "* 9-17 * * *"
[[alerting.route]]
tenant = "acme"
receiver = "ops"
schedule = "day"
group-by = ["tenant"]
group-wait = "30s"
group-interval = "5m"
[[alerting.receiver]]
name = "ops"
[alerting.receiver.discord]
url = "http://127.0.0.1:9/hook"
"#;

#[test]
fn what_joins_a_held_back_group_is_summarised_at_the_opening_with_its_times() {
    let c = config(HELD);
    let mut e = Engine::default();
    let target = |id, at, kind, subject: &str| {
        outage(
            id,
            at,
            kind,
            "target",
            subject,
            "edge-1",
            Some("10.1.2.0/24"),
        )
    };
    let (start, end) = (EventKind::OutageStart, EventKind::OutageEnd);
    // A goes down and stays down: its group is held back at the flush.
    assert!(step(&mut e, &c, &[target(1, T0, start, "10.1.2.1")], &[], T0).is_empty());
    assert!(step(&mut e, &c, &[], &[], T0 + 30 * S).is_empty());
    // B joins the held-back group, and is back before the opening.
    let b = [target(2, T0 + 60 * S, start, "10.1.2.2")];
    assert!(step(&mut e, &c, &b, &[], T0 + 60 * S).is_empty());
    let b = [target(3, T0 + 120 * S, end, "10.1.2.2")];
    assert!(step(&mut e, &c, &b, &[], T0 + 120 * S).is_empty());
    // C twice.
    for (i, (from, to)) in [(600, 660), (1200, 1500)].into_iter().enumerate() {
        let id = 10 + 2 * i64::try_from(i).unwrap();
        let ev = [target(id, T0 + from * S, start, "10.1.2.3")];
        assert!(step(&mut e, &c, &ev, &[], T0 + from * S).is_empty());
        let ev = [target(id + 1, T0 + to * S, end, "10.1.2.3")];
        assert!(step(&mut e, &c, &ev, &[], T0 + to * S).is_empty());
    }
    // Nothing until 09:00, then exactly one message.
    assert!(step(&mut e, &c, &[], &[], T0 + 3599 * S).is_empty());
    let m = step(&mut e, &c, &[], &[], T0 + 3600 * S);
    assert_eq!(m.len(), 1, "{m:#?}");
    let m = &m[0];
    assert_eq!(m.deferred_since_ms, Some(T0 + 30 * S));
    let firing: Vec<&str> = m
        .firing
        .iter()
        .map(|a| a.labels["target"].as_str())
        .collect();
    assert_eq!(firing, ["10.1.2.1"]);
    let held: Vec<(&str, u32, i64, Option<i64>)> = m
        .resolved_while_deferred
        .iter()
        .map(|a| {
            (
                a.labels["target"].as_str(),
                a.held_times,
                a.starts_ms,
                a.ends_ms,
            )
        })
        .collect();
    assert_eq!(
        held,
        [
            ("10.1.2.2", 1, T0 + 60 * S, Some(T0 + 120 * S)),
            ("10.1.2.3", 2, T0 + 600 * S, Some(T0 + 1500 * S)),
        ]
    );
    let text = m.text();
    assert!(text.contains("fired 2 times, first "), "{text}");
    assert!(text.contains("fired once, "), "{text}");
    // Summarised once: the next flushes say nothing more about B and C.
    assert!(step(&mut e, &c, &[], &[], T0 + 4000 * S).is_empty());
    let members: Vec<&String> = e.groups.values().flat_map(|g| g.members.keys()).collect();
    assert_eq!(members.len(), 1, "{members:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reload_or_a_restart_moves_a_held_back_group_to_the_new_schedule() {
    use crate::store::Store;
    let opens_0810 = HELD.replace("cron = \"* 9-17 * * *\"", "cron = \"10-59 8-17 * * *\"");
    let key = AgentKey {
        tenant: "acme".into(),
        name: "edge-1".into(),
    };
    let until =
        |clock: Clock, t: i64| Duration::from_millis(u64::try_from(t - clock.now_ms()).unwrap());
    let queued = |store: &Store| state::recent_notifications(store, None, 100).unwrap();
    for restart in [false, true] {
        let store = Store::open(Path::new(":memory:")).unwrap();
        let clock = Clock::at(T0 * 1_000_000);
        let handle = Handle::new(clock);
        let (tx, settings) = watch::channel(Arc::new(config(HELD)));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store.clone(), settings, handle.clone(), stop.clone()));
        let detail = json!({"scope": "target", "subject": "10.1.2.1", "series": 1});
        store
            .with(|c| {
                crate::store::insert_event(
                    c,
                    clock.now_ms(),
                    &key,
                    EventKind::OutageStart,
                    &detail,
                    Some("10.1.2.0/24"),
                )
            })
            .unwrap();
        handle.kick.notify_one();
        // Held back at the flush after group-wait (the schedule opens 09:00).
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(queued(&store).is_empty());
        let groups = state::groups(&store).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].next_flush_ms, T0 + 3600 * S, "{groups:?}");
        // The schedule now opens at 08:10: by reload, or by restarting
        // with the new config (the stored next flush still says 09:00).
        let task = if restart {
            stop.cancel();
            task.await.unwrap();
            let stop = CancellationToken::new();
            let (tx, settings) = watch::channel(Arc::new(config(&opens_0810)));
            let task = tokio::spawn(run(store.clone(), settings, handle.clone(), stop.clone()));
            (task, stop, tx)
        } else {
            tx.send_replace(Arc::new(config(&opens_0810)));
            (task, stop, tx)
        };
        tokio::time::sleep(until(clock, T0 + 600 * S - 1000)).await;
        assert!(queued(&store).is_empty(), "restart {restart}");
        tokio::time::sleep(until(clock, T0 + 600 * S + 1000)).await;
        let sent = queued(&store);
        assert_eq!(sent.len(), 1, "restart {restart}: {sent:#?}");
        assert_eq!(sent[0].created_ms, T0 + 600 * S, "restart {restart}");
        assert_eq!(sent[0].message.firing.len(), 1);
        let (task, stop, _tx) = task;
        stop.cancel();
        task.await.unwrap();
    }
}

#[test]
fn notification_uids_are_unique_across_collectors_and_wipes_and_stable_across_retries() {
    use crate::store::Store;
    let c = config(BASIC);
    let mut e = Engine::default();
    let start = outage(
        1,
        T0,
        EventKind::OutageStart,
        "target",
        "10.1.2.1",
        "edge-1",
        Some("10.1.2.0/24"),
    );
    assert!(step(&mut e, &c, &[start], &[], T0).is_empty());
    e.tick(&c.alerting, &[], T0 + 30 * S);
    let changes = e.take_changes();
    assert!(!changes.messages.is_empty());
    // The same notification queued by two collectors, and by one whose
    // state directory was wiped: three stores, three uids.
    let uid = |store: &Store| {
        state::commit(store, &c.alerting, &changes, 1, T0 + 30 * S).unwrap();
        let first = state::next_pending(store, "ops", "discord")
            .unwrap()
            .unwrap();
        // A retry reads the same notification, with the same uid.
        state::attempt_failed(store, first.id, "timeout", T0 + 60 * S, false).unwrap();
        let again = state::next_pending(store, "ops", "discord")
            .unwrap()
            .unwrap();
        assert_eq!((again.id, &again.uid), (first.id, &first.uid));
        assert_eq!(first.uid.len(), 32, "{}", first.uid);
        first.uid
    };
    let uids: std::collections::BTreeSet<String> = (0..3)
        .map(|_| uid(&Store::open(Path::new(":memory:")).unwrap()))
        .collect();
    assert_eq!(uids.len(), 3, "{uids:?}");
    // The mail's Message-ID carries it.
    let cfg = config(
        "[alerting]\n[[alerting.receiver]]\nname = \"m\"\n[alerting.receiver.email]\n\
         host = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"sonde <s@example.net>\"\nto = [\"o@example.net\"]\n",
    );
    let mailer = super::receiver::email::Email::new(
        cfg.alerting.receiver[0].email.as_ref().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let uid = uids.iter().next().unwrap();
    let mail = mailer.mail(uid, &changes.messages[0]).unwrap();
    let head = String::from_utf8_lossy(&mail.formatted()).into_owned();
    assert!(
        head.contains(&format!("Message-ID: <sonde.{uid}@example.net>")),
        "{head}"
    );
}

/// What `GET /api/v1/alerts` says of groups: an alert notified as flapping
/// was notified (as flapping); a target's outage, which has no agent, is
/// not shown grouped by an empty `agent`.
#[test]
fn the_api_shows_how_an_alert_was_notified_and_no_label_it_lacks() {
    use crate::store::Store;
    let store = Store::open(Path::new(":memory:")).unwrap();
    let c = config(BASIC);
    let mut e = Engine::default();
    let mut cursor = 0;
    let mut run = |e: &mut Engine, events: &[EventRow], at: i64| {
        for ev in events {
            for u in from_event(&c, &c.tenancy(), ev) {
                e.apply(&c.alerting, u, at);
            }
        }
        e.tick(&c.alerting, &[], at);
        let changes = e.take_changes();
        cursor += 1;
        state::commit(&store, &c.alerting, &changes, cursor, at).unwrap();
        changes.messages
    };
    let target = outage(
        100,
        T0,
        EventKind::OutageStart,
        "target",
        "10.1.2.1",
        "edge-1",
        Some("10.1.2.0/24"),
    );
    let mut sent = run(&mut e, &[target], T0);
    let mut t = T0;
    for i in 0..10 {
        let kind = if i % 2 == 0 {
            EventKind::AgentMissing
        } else {
            EventKind::AgentBack
        };
        sent.extend(run(
            &mut e,
            &[event(i, t, "edge-1", kind, json!({}), None)],
            t,
        ));
        t += 40 * S;
        sent.extend(run(&mut e, &[], t));
    }
    let titles: Vec<String> = sent.iter().map(Message::title).collect();
    assert!(
        titles.iter().any(|t| t.starts_with("[FLAPPING:1]")),
        "{titles:#?}"
    );
    let access = crate::read::access::Access::of_tenant(c.tenancy(), "acme");
    let v = view::alerts(&store, &access, t, 3_600_000, None).unwrap();
    let of = |rule: &str| {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} alert in {v:#}"))
            .clone()
    };
    let missing = of("agent-missing");
    assert_eq!(missing["groups"][0]["notified"], true, "{missing:#}");
    assert_eq!(
        missing["groups"][0]["notified_as"], "flapping",
        "{missing:#}"
    );
    let down = of("outage");
    assert_eq!(
        down["groups"][0]["labels"],
        json!({"tenant": "acme", "prefix": "10.1.2.0/24"}),
        "{down:#}"
    );
    assert_eq!(down["groups"][0]["notified_as"], "firing", "{down:#}");
}
