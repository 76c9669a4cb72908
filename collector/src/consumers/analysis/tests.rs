//! Analysis on synthetic result streams: averages and timeline against
//! hand-computed values (tokio's paused clock drives "now"), outages,
//! correlation and route changes, and persistence across a restart.

use std::path::Path;

use prost::Message as _;
use sonde_proto::v1::{PingResult, PingStatus, Record, ResultBatch, record};

use super::*;
use crate::log::LogKind;
use crate::store::{EventQuery, EventRow, Scope};

const S: i64 = 1_000_000_000;
/// A whole hour (and so a whole minute): 2027-01-15T08:00:00Z.
const T0: i64 = 1_799_971_200 * S;

fn ping(target: &str, t: i64, rtt_ms: Option<f64>) -> Record {
    Record {
        kind: Some(record::Kind::Ping(PingResult {
            target: target.to_owned(),
            address: target.to_owned(),
            sent_unix_nanos: t,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            rtt_nanos: rtt_ms.map_or(0, |r| (r * 1e6) as u64),
            status: if rtt_ms.is_some() {
                PingStatus::Ok
            } else {
                PingStatus::Timeout
            } as i32,
            ..PingResult::default()
        })),
    }
}

fn entry(agent: &str, records: Vec<Record>) -> LoggedBatch {
    LoggedBatch {
        id: 0,
        kind: LogKind::Batch,
        tenant: "acme".into(),
        agent: agent.into(),
        spool_id: 1,
        batch_seq: 1,
        received_ms: 0,
        results: 0,
        payload: ResultBatch {
            batch_seq: 1,
            sealed_unix_nanos: 0,
            records,
        }
        .encode_to_vec(),
    }
}

fn analyzer(store: &Store, settings: Settings) -> Analyzer {
    Analyzer::load(store, settings, Clock::at(T0)).unwrap()
}

fn key(agent: &str, target: &str) -> SeriesKey {
    SeriesKey {
        tenant: "acme".into(),
        agent: agent.into(),
        probe: Probe::Ping,
        target: target.into(),
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[tokio::test(start_paused = true)]
async fn averages_and_timeline_match_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let m = |k: i64| T0 + k * 60 * S; // start of minute m+k
    let t = "10.0.0.1";
    let mut records = Vec::new();
    // Two hours ago: 10 answered probes at 100 ms.
    records.extend((0..10).map(|i| ping(t, T0 - 2 * 3600 * S + i * S, Some(100.0))));
    // Minute m−10: 10, 20, 30 ms and three lost.
    for (i, r) in [Some(10.0), None, Some(20.0), None, Some(30.0), None]
        .into_iter()
        .enumerate()
    {
        records.push(ping(t, m(-10) + i64::try_from(i).unwrap() * S, r));
    }
    // Minute m−3: 40 and 60 ms. Minute m−1: 5, 7 ms and one lost.
    records.extend([ping(t, m(-3), Some(40.0)), ping(t, m(-3) + S, Some(60.0))]);
    records.extend([
        ping(t, m(-1), Some(5.0)),
        ping(t, m(-1) + S, Some(7.0)),
        ping(t, m(-1) + 2 * S, None),
    ]);
    // The current minute m: 9 and 11 ms.
    records.extend([
        ping(t, m(0) + 10 * S, Some(9.0)),
        ping(t, m(0) + 30 * S, Some(11.0)),
    ]);
    an.apply(&entry("edge-1", records));
    tokio::time::advance(Duration::from_secs(45)).await;
    let now = an.clock.now_ns();
    assert_eq!(now, T0 + 45 * S);

    let check = |an: &Analyzer| {
        let book = an.handle();
        let book = book.read();
        let s = book.get(&key("edge-1", t)).expect("series");
        let a = s.averages(now);
        assert_eq!(a.latest.as_ref().unwrap().rtt_ms, Some(11.0));
        // 1 min = minutes m−1 and m: 5 probes, 1 lost; mean of 5, 7, 9, 11.
        assert_eq!((a.m1.probes, a.m1.loss_pct), (5, Some(20.0)));
        assert!(close(a.m1.mean_ms, 8.0), "{:?}", a.m1);
        // 5 min adds m−3: 7 probes, 1 lost; mean 132 / 6.
        assert_eq!(a.m5.probes, 7);
        assert!(
            close(a.m5.loss_pct, 100.0 / 7.0) && close(a.m5.mean_ms, 22.0),
            "{:?}",
            a.m5
        );
        // 1 h adds m−10: 13 probes, 4 lost; mean 192 / 9.
        assert_eq!(a.h1.probes, 13);
        assert!(
            close(a.h1.loss_pct, 400.0 / 13.0) && close(a.h1.mean_ms, 192.0 / 9.0),
            "{:?}",
            a.h1
        );
        // 24 h adds the 10 probes of two hours ago: 23 probes, 4 lost.
        assert_eq!(a.h24.probes, 23);
        assert!(
            close(a.h24.loss_pct, 400.0 / 23.0) && close(a.h24.mean_ms, 1192.0 / 19.0),
            "{:?}",
            a.h24
        );
        // Jitter of the 1 min window: population stddev of 5, 7, 9, 11.
        assert!(close(a.m1.jitter_ms, 5.0f64.sqrt()), "{:?}", a.m1.jitter_ms);

        let tl = s.timeline(now);
        assert_eq!(tl.len(), 60);
        assert_eq!(tl[0].start_ms, m(-59) / 1_000_000);
        assert_eq!(tl[59].start_ms, T0 / 1_000_000);
        let at = |k: usize| tl[59 - k];
        assert_eq!(
            (at(10).probes, at(10).loss_pct, at(10).no_data),
            (6, Some(50.0), false)
        );
        assert!(close(at(10).mean_ms, 20.0));
        assert_eq!(
            (at(2).probes, at(2).mean_ms, at(2).loss_pct, at(2).no_data),
            (0, None, None, true)
        );
        assert_eq!((at(0).probes, at(0).mean_ms), (2, Some(10.0)));
        assert_eq!(tl.iter().filter(|e| !e.no_data).count(), 4);
    };
    check(&an);
    // A restart keeps it: checkpoint, reload from the store.
    an.checkpoint().unwrap();
    drop(an);
    let store = Store::open_dir(dir.path()).unwrap();
    let mut again = Analyzer::load(&store, Settings::default(), Clock::at(T0 + 45 * S)).unwrap();
    check(&again);
    // And a result after the restart adds to the stored minute.
    again.apply(&entry("edge-1", vec![ping(t, m(0) + 40 * S, Some(13.0))]));
    let h = again.handle();
    assert_eq!(
        h.read()
            .get(&key("edge-1", t))
            .unwrap()
            .averages(now)
            .m1
            .probes,
        6
    );
    again.checkpoint().unwrap();
    let stored = store
        .with(|c| persist::minutes(c, 1, m(0) / (60 * S), m(0) / (60 * S)))
        .unwrap();
    assert_eq!(stored[0].1.probes, 3);
}

/// Feeds `rounds` rounds at 1 s from `t`: every agent probes every one of
/// its targets; `down(agent, target, round)` says which fail.
fn feed(
    an: &mut Analyzer,
    t: i64,
    rounds: i64,
    plan: &[(&str, Vec<String>)],
    down: &dyn Fn(&str, &str, i64) -> bool,
) {
    for r in 0..rounds {
        for (agent, targets) in plan {
            let records = targets
                .iter()
                .map(|target| {
                    let ok = !down(agent, target, r);
                    ping(target, t + r * S, ok.then_some(1.0))
                })
                .collect();
            an.apply(&entry(agent, records));
        }
    }
}

fn events(store: &Store) -> Vec<EventRow> {
    store
        .events(
            &Scope::All,
            &EventQuery {
                limit: 1000,
                ..EventQuery::default()
            },
        )
        .unwrap()
}

fn outage_events(store: &Store) -> Vec<(EventKind, String, String)> {
    events(store)
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::OutageStart | EventKind::OutageEnd))
        .map(|e| {
            (
                e.kind,
                e.detail["scope"].as_str().unwrap_or("").to_owned(),
                e.detail["subject"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The start and end events of one outage.
fn start_and_end(scope: &str, subject: &str) -> Vec<(EventKind, String, String)> {
    [EventKind::OutageStart, EventKind::OutageEnd]
        .into_iter()
        .map(|k| (k, scope.to_owned(), subject.to_owned()))
        .collect()
}

/// The (first) outage-end event.
fn end_event(store: &Store) -> EventRow {
    events(store)
        .into_iter()
        .find(|e| e.kind == EventKind::OutageEnd)
        .expect("an outage-end event")
}

fn hosts(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}.{i}")).collect()
}

#[test]
fn an_agent_losing_its_network_is_one_outage() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let plan = [
        ("edge-1", hosts("10.1.1", 1..6)),
        ("edge-2", hosts("10.1.1", 1..6)),
    ];
    // edge-1 loses everything from round 5 to 24; edge-2 is fine.
    feed(&mut an, T0, 30, &plan, &|a, _, r| {
        a == "edge-1" && (5..25).contains(&r)
    });
    an.checkpoint().unwrap();
    assert_eq!(
        outage_events(&store),
        start_and_end("agent-network", "acme/edge-1")
    );
    let end = end_event(&store);
    // 5 targets × 20 lost probes; from round 5 to the first answer (25).
    assert_eq!(end.detail["lost"], 100);
    assert_eq!(end.detail["start_ms"], (T0 + 5 * S) / 1_000_000);
    assert_eq!(end.detail["end_ms"], (T0 + 25 * S) / 1_000_000);
    assert_eq!(end.detail["series"], 5);
}

#[test]
fn a_target_down_for_three_agents_is_one_target_outage() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let targets: Vec<String> = ["10.2.0.1", "10.2.1.1", "10.2.2.1", "10.2.3.1", "10.2.4.1"]
        .map(String::from)
        .to_vec();
    let plan = [
        ("a1", targets.clone()),
        ("a2", targets.clone()),
        ("a3", targets),
    ];
    feed(&mut an, T0, 40, &plan, &|_, t, r| {
        t == "10.2.2.1" && (5..30).contains(&r)
    });
    an.checkpoint().unwrap();
    assert_eq!(outage_events(&store), start_and_end("target", "10.2.2.1"));
    let end = end_event(&store);
    assert_eq!(
        (end.detail["series"].clone(), end.detail["lost"].clone()),
        (3.into(), 75.into())
    );
}

/// A target two of three agents cannot reach: its outage names both (not
/// only the series that settled first) and says 2 of 3; while it is open
/// the outage shows the probes lost so far, not 0 until it ends.
#[test]
fn a_target_outage_names_who_sees_it_and_counts_its_losses_while_open() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let targets = hosts("10.2.0", 1..6);
    let plan = [
        ("a1", targets.clone()),
        ("a2", targets.clone()),
        ("a3", targets),
    ];
    let down = |a: &str, t: &str, r: i64| t == "10.2.0.3" && a != "a3" && r >= 5;
    let open_lost = |store: &Store| -> i64 {
        store
            .with(|c| {
                c.query_row("SELECT lost FROM outages WHERE end_ns IS NULL", [], |r| {
                    r.get(0)
                })
            })
            .unwrap()
    };
    feed(&mut an, T0, 20, &plan, &down);
    an.checkpoint().unwrap();
    let start = events(&store)
        .into_iter()
        .find(|e| e.kind == EventKind::OutageStart)
        .expect("an outage-start event");
    assert_eq!(start.detail["scope"], "target");
    assert_eq!(
        start.detail["agents"],
        serde_json::json!(["acme/a1", "acme/a2"])
    );
    assert_eq!(
        (
            &start.detail["failing_agents"],
            &start.detail["probing_agents"]
        ),
        (&2.into(), &3.into())
    );
    // Rounds 5–19 lost by two agents.
    assert_eq!(open_lost(&store), 2 * 15);
    feed(&mut an, T0 + 20 * S, 5, &plan, &|a, t, r| {
        down(a, t, r + 20)
    });
    an.checkpoint().unwrap();
    assert_eq!(open_lost(&store), 2 * 20);
    feed(&mut an, T0 + 25 * S, 5, &plan, &|_, _, _| false);
    an.checkpoint().unwrap();
    assert_eq!(end_event(&store).detail["lost"], 2 * 20);
}

#[test]
fn most_of_a_slash_24_down_is_one_prefix_outage() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    // 254 hosts of 10.3.0.0/24 and 80 elsewhere, so the agent still
    // reaches most of what it probes (200 of 334 down < 80 %).
    let mut targets = hosts("10.3.0", 1..255);
    targets.extend(hosts("10.4.0", 1..81));
    let plan = [("edge-1", targets)];
    let dead = |t: &str| {
        t.starts_with("10.3.0.") && t.rsplit('.').next().unwrap().parse::<u32>().unwrap() <= 200
    };
    feed(&mut an, T0, 30, &plan, &|_, t, r| {
        dead(t) && (3..20).contains(&r)
    });
    an.checkpoint().unwrap();
    assert_eq!(
        outage_events(&store),
        start_and_end("prefix", "10.3.0.0/24")
    );
}

#[test]
fn one_agent_not_reaching_one_target_is_a_path_outage() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let targets = hosts("10.5.0", 1..6);
    let plan = [("a1", targets.clone()), ("a2", targets)];
    feed(&mut an, T0, 30, &plan, &|a, t, r| {
        a == "a1" && t == "10.5.0.3" && (3..20).contains(&r)
    });
    // A blip shorter than the settle time is still reported.
    feed(&mut an, T0 + 30 * S, 10, &plan, &|a, t, r| {
        a == "a2" && t == "10.5.0.4" && (1..4).contains(&r)
    });
    an.checkpoint().unwrap();
    assert_eq!(
        outage_events(&store),
        vec![
            (
                EventKind::OutageStart,
                "path".into(),
                "acme/a1 → 10.5.0.3".into()
            ),
            (
                EventKind::OutageEnd,
                "path".into(),
                "acme/a1 → 10.5.0.3".into()
            ),
            (
                EventKind::OutageStart,
                "path".into(),
                "acme/a2 → 10.5.0.4".into()
            ),
            (
                EventKind::OutageEnd,
                "path".into(),
                "acme/a2 → 10.5.0.4".into()
            ),
        ]
    );
}

#[test]
fn route_changes_are_events_with_both_hop_lists() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let trace = |t: i64, hops: &[&str], hash: u64| Record {
        kind: Some(record::Kind::Trace(route::test_trace(t, hops, hash))),
    };
    let a = ["10.0.0.1", "10.9.0.1"];
    let b = ["10.0.0.2", "10.9.0.1"];
    let stream = [
        (&a, 1),
        (&a, 1),
        (&b, 2),
        (&a, 1),
        (&b, 2),
        (&b, 2),
        (&b, 2),
    ];
    for (i, (hops, hash)) in stream.into_iter().enumerate() {
        let t = T0 + i64::try_from(i).unwrap() * 60 * S;
        an.apply(&entry("edge-1", vec![trace(t, hops, hash)]));
    }
    an.checkpoint().unwrap();
    let changes: Vec<EventRow> = events(&store)
        .into_iter()
        .filter(|e| e.kind == EventKind::RouteChange)
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let d = &changes[0].detail;
    assert_eq!(d["old"]["hops"], serde_json::json!(a));
    assert_eq!(d["new"]["hops"], serde_json::json!(b));
    assert_eq!(changes[0].at_ms, (T0 + 4 * 60 * S) / 1_000_000);
    // The confirmed path survives a restart: no second event for it.
    drop(an);
    let mut again = analyzer(&store, Settings::default());
    again.apply(&entry("edge-1", vec![trace(T0 + 10 * 60 * S, &b, 2)]));
    again.checkpoint().unwrap();
    assert_eq!(
        events(&store)
            .iter()
            .filter(|e| e.kind == EventKind::RouteChange)
            .count(),
        1
    );
}

#[test]
fn an_outage_open_across_a_restart_is_reported_once() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let plan = [
        ("edge-1", hosts("10.6.1", 1..6)),
        ("edge-2", hosts("10.6.1", 1..6)),
    ];
    let down = |a: &str, t: &str, r: i64| {
        // edge-1 cut from round 5; one target comes back at round 17,
        // before the restart, the others after it.
        a == "edge-1" && r >= 5 && !(t == "10.6.1.1" && r >= 17)
    };
    feed(&mut an, T0, 20, &plan, &|a, t, r| down(a, t, r));
    an.checkpoint().unwrap();
    drop(an);
    let mut again = analyzer(&store, Settings::default());
    feed(&mut again, T0 + 20 * S, 10, &plan, &|a, t, r| {
        down(a, t, r + 20) && r < 5
    });
    again.checkpoint().unwrap();
    assert_eq!(
        outage_events(&store),
        start_and_end("agent-network", "acme/edge-1")
    );
    let end = end_event(&store);
    // 10.6.1.1 lost rounds 5–16 (12), the other four rounds 5–24 (4 × 20).
    assert_eq!(end.detail["lost"], 12 + 80);
    assert_eq!(end.detail["end_ms"], (T0 + 25 * S) / 1_000_000);
}

#[test]
fn aggregates_past_the_retention_are_deleted() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default()).with_retention(Duration::from_secs(86_400));
    let t = "10.7.0.1";
    an.apply(&entry(
        "edge-1",
        vec![ping(t, T0 - 3 * 86_400 * S, Some(1.0))],
    ));
    an.apply(&entry("edge-1", vec![ping(t, T0 - 3600 * S, Some(2.0))]));
    an.checkpoint().unwrap();
    let rows = |table: &str| -> i64 {
        store
            .with(|c| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)))
            .unwrap()
    };
    assert_eq!((rows("minute_buckets"), rows("hour_buckets")), (2, 2));
    // One minute row and one hour row are older than a day.
    assert_eq!(an.prune().unwrap(), 2);
    assert_eq!((rows("minute_buckets"), rows("hour_buckets")), (1, 1));
    assert_eq!(an.prune().unwrap(), 0);
}

#[test]
fn one_agents_results_are_not_judged_before_the_others_arrive() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let targets = hosts("10.8.0", 1..6);
    let both = [("a1", targets.clone()), ("a2", targets.clone())];
    let down = |_: &str, t: &str, r: i64| t == "10.8.0.3" && r >= 5;
    feed(&mut an, T0, 5, &both, &down);
    // a1's batches for the next 20 s arrive before a2's (transport delay):
    // judged on a1's clock alone, a2 would still look up and the target
    // outage would be a path outage.
    feed(
        &mut an,
        T0 + 5 * S,
        20,
        &[("a1", targets.clone())],
        &|a, t, r| down(a, t, r + 5),
    );
    feed(&mut an, T0 + 5 * S, 20, &[("a2", targets)], &|a, t, r| {
        down(a, t, r + 5)
    });
    an.checkpoint().unwrap();
    assert_eq!(
        outage_events(&store),
        vec![(EventKind::OutageStart, "target".into(), "10.8.0.3".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn replay_frames_come_from_memory_and_the_store() {
    use crate::read::live::code;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let two_hours_ago = T0 - 2 * 3600 * S;
    let minute_ago = T0 - 60 * S;
    let mut records = Vec::new();
    for i in 0..10 {
        // Two hours ago: .1 answers (4 ms), .2 loses all, .3 half.
        records.push(ping("10.0.0.1", two_hours_ago + i * S, Some(4.0)));
        records.push(ping("10.0.0.2", two_hours_ago + i * S, None));
        records.push(ping(
            "10.0.0.3",
            two_hours_ago + i * S,
            (i % 2 == 0).then_some(2.0),
        ));
        // A minute ago: only .1, and it lost everything.
        records.push(ping("10.0.0.1", minute_ago + i * S, None));
    }
    an.apply(&entry("edge-1", records));
    an.checkpoint().unwrap();
    let tenancy = Arc::new(
        crate::read::access::Tenancy::default()
            .grant("acme", &["10.0.0.0/24"])
            .grant("globex", &["10.9.0.0/24"]),
    );
    let access = crate::read::access::Access::of_tenant(tenancy.clone(), "acme");
    let h = an.handle();
    let unit = |t: i64| t.div_euclid(60 * S);
    // Past the in-memory hour: from the stored minute aggregates.
    let old = crate::read::live::replay(&h, &store, &access, unit(two_hours_ago), T0).unwrap();
    assert_eq!(old.len(), 1);
    let f = &old[0];
    assert_eq!((f.prefix.as_str(), f.s.len()), ("10.0.0.0/24", 256));
    assert_eq!(
        &f.s[..5],
        &[code::NONE, code::UP, code::DOWN, code::UP, code::NONE]
    );
    assert_eq!((f.r[1], f.l[1]), (Some(4.0), Some(0.0)));
    assert_eq!((f.r[2], f.l[2]), (None, Some(100.0)));
    assert_eq!((f.r[3], f.l[3]), (Some(2.0), Some(50.0)));
    // The last hour: from memory; nothing measured .2 and .3 then.
    let recent = crate::read::live::replay(&h, &store, &access, unit(minute_ago), T0).unwrap();
    assert_eq!(
        &recent[0].s[..4],
        &[code::NONE, code::DOWN, code::STALE, code::STALE]
    );
    // Another tenant's grants see nothing of it.
    let other = crate::read::access::Access::of_tenant(tenancy, "globex");
    let theirs = crate::read::live::replay(&h, &store, &other, unit(two_hours_ago), T0).unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].prefix, "10.9.0.0/24");
    assert!(theirs[0].s.iter().all(|s| *s == code::NONE));
    // Live: .1 is the latest answer's RTT (none: its last probe was lost).
    let live = crate::read::live::live(&h.read(), &access, T0);
    assert_eq!(live[0].r[1], None);
    assert_eq!(live[0].l[1], Some(100.0));
}

/// Feeds `rounds` rounds at 1 s from `t` for agents of several tenants:
/// `(tenant, agent, targets)`; `down(agent, target, round)` says which fail.
fn feed_tenants(
    an: &mut Analyzer,
    t: i64,
    rounds: i64,
    plan: &[(&str, &str, Vec<String>)],
    down: &dyn Fn(&str, &str, i64) -> bool,
) {
    for r in 0..rounds {
        for (tenant, agent, targets) in plan {
            let records = targets
                .iter()
                .map(|target| ping(target, t + r * S, (!down(agent, target, r)).then_some(1.0)))
                .collect();
            let mut e = entry(agent, records);
            e.tenant = (*tenant).to_owned();
            an.apply(&e);
        }
    }
}

/// `(tenant, scope, subject)` of every outage-start event.
fn outage_starts(store: &Store) -> Vec<(String, String, String)> {
    events(store)
        .into_iter()
        .filter(|e| e.kind == EventKind::OutageStart)
        .map(|e| {
            (
                e.tenant,
                e.detail["scope"].as_str().unwrap_or("").to_owned(),
                e.detail["subject"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn tenancy_config(globex_trusts: &str) -> tokio::sync::watch::Receiver<Arc<crate::Config>> {
    tokio::sync::watch::channel(Arc::new(tenancy_config_text(globex_trusts))).1
}

fn tenancy_config_text(globex_trusts: &str) -> crate::Config {
    let text = format!(
        "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
         [access]\noperator-tenants = [\"noc\"]\n\
         [[tenant]]\nname = \"acme\"\nprefixes = [\"10.7.0.0/24\"]\n\
         [[tenant]]\nname = \"globex\"\nprefixes = [\"10.7.1.0/24\"]\ntrust = [{globex_trusts}]\n"
    );
    sonde_runtime::config::Source::from_text(Path::new("t.toml"), text)
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_tenants_prefix_outage_counts_only_agents_it_trusts() {
    // acme's three agents lose 8 of 10 hosts of globex's 10.7.1.0/24 for
    // 20 s (their way there is broken); globex's own agent keeps reaching
    // them. Untrusted, acme's losses are acme's alone: its correlation
    // calls it a prefix outage, globex's has nothing.
    let run = |trust: &str, with_globex_agent: bool| {
        let store = Store::open(Path::new(":memory:")).unwrap();
        let mut an = analyzer(&store, Settings::default()).with_config(tenancy_config(trust));
        let mut targets = hosts("10.7.1", 1..11);
        targets.extend(hosts("10.7.0", 1..11));
        let mut plan = vec![
            ("acme", "a1", targets.clone()),
            ("acme", "a2", targets.clone()),
            ("acme", "a3", targets),
        ];
        if with_globex_agent {
            plan.push(("globex", "g1", hosts("10.7.1", 1..11)));
        }
        let lost = |a: &str, t: &str, r: i64| {
            a.starts_with('a')
                && t.starts_with("10.7.1.")
                && t.rsplit('.').next().unwrap().parse::<u32>().unwrap() <= 8
                && (5..25).contains(&r)
        };
        feed_tenants(&mut an, T0, 40, &plan, &lost);
        an.checkpoint().unwrap();
        let mut starts = outage_starts(&store);
        starts.sort();
        starts
    };
    let prefix = |t: &str| (t.to_owned(), "prefix".to_owned(), "10.7.1.0/24".to_owned());
    // Untrusted, with or without globex's own agent: never globex's.
    assert_eq!(run("", true), [prefix("acme")]);
    assert_eq!(run("", false), [prefix("acme")]);
    // Trusted, alone: acme's agents count for globex too.
    assert_eq!(run("\"acme\"", false), [prefix("acme"), prefix("globex")]);
    // Trusted, with globex's own agent still reaching the 8: for globex
    // no host is wholly down (one series answers), so no prefix outage;
    // three agents failing each is a target outage by the usual rule.
    let mixed = run("\"acme\"", true);
    assert!(mixed.contains(&prefix("acme")), "{mixed:?}");
    assert!(!mixed.contains(&prefix("globex")), "{mixed:?}");
    assert_eq!(
        mixed
            .iter()
            .filter(|(t, s, _)| t == "globex" && s == "target")
            .count(),
        8,
        "{mixed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_operator_agent_counts_for_every_tenant_granted() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default()).with_config(tenancy_config(""));
    let mut targets = hosts("10.7.1", 1..11);
    targets.extend(hosts("10.9.0", 1..11));
    let plan = [("noc", "n1", targets)];
    feed_tenants(&mut an, T0, 30, &plan, &|_, t, r| {
        t.starts_with("10.7.1.")
            && t.rsplit('.').next().unwrap().parse::<u32>().unwrap() <= 8
            && (5..25).contains(&r)
    });
    an.checkpoint().unwrap();
    let mut starts = outage_starts(&store);
    starts.sort();
    let prefix = |t: &str| (t.to_owned(), "prefix".to_owned(), "10.7.1.0/24".to_owned());
    assert_eq!(starts, [prefix("globex"), prefix("noc")]);
    // Both end; outage-ends per tenant too.
    let ends = events(&store)
        .into_iter()
        .filter(|e| e.kind == EventKind::OutageEnd)
        .count();
    assert_eq!(ends, 2);
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_adds_trust_reaches_an_outage_already_open() {
    // acme's three agents lose globex's hosts; globex does not trust
    // acme yet. Mid-outage the operator adds the trust and reloads: globex
    // gets its outage at once (not at the hosts' next failure), dated
    // from the start, and its end.
    let store = Store::open(Path::new(":memory:")).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(tenancy_config_text("")));
    let mut an = analyzer(&store, Settings::default()).with_config(rx);
    let mut targets = hosts("10.7.1", 1..11);
    targets.extend(hosts("10.7.0", 1..11));
    let plan = vec![
        ("acme", "a1", targets.clone()),
        ("acme", "a2", targets.clone()),
        ("acme", "a3", targets),
    ];
    let lost = |t0: i64| {
        move |_: &str, t: &str, r: i64| {
            t.starts_with("10.7.1.")
                && t.rsplit('.').next().unwrap().parse::<u32>().unwrap() <= 8
                && (5 - t0..25 - t0).contains(&r)
        }
    };
    feed_tenants(&mut an, T0, 20, &plan, &lost(0));
    an.checkpoint().unwrap();
    let prefix = |t: &str| (t.to_owned(), "prefix".to_owned(), "10.7.1.0/24".to_owned());
    assert_eq!(outage_starts(&store), [prefix("acme")]);
    tx.send_replace(Arc::new(tenancy_config_text("\"acme\"")));
    an.follow_config(false);
    feed_tenants(&mut an, T0 + 20 * S, 20, &plan, &lost(20));
    an.checkpoint().unwrap();
    let mut starts = outage_starts(&store);
    starts.sort();
    assert_eq!(starts, [prefix("acme"), prefix("globex")]);
    let globex_start = events(&store)
        .into_iter()
        .find(|e| e.kind == EventKind::OutageStart && e.tenant == "globex")
        .unwrap();
    assert_eq!(globex_start.detail["start_ms"], (T0 + 5 * S) / 1_000_000);
    let ends: Vec<String> = events(&store)
        .into_iter()
        .filter(|e| e.kind == EventKind::OutageEnd)
        .map(|e| e.tenant)
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
}

#[test]
fn an_outage_open_when_upgrading_from_schema_7_is_ended_once() {
    // Made by this version, then turned back into what version 7 kept:
    // membership in `series.outage_group`, no `outage_members`, an outage
    // without a tenant for a target outage.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let plan = [("a1", hosts("10.6.2", 1..3)), ("a2", hosts("10.6.2", 1..3))];
    let down = |_: &str, t: &str, r: i64| t == "10.6.2.1" && r >= 5;
    feed(&mut an, T0, 20, &plan, &down);
    an.checkpoint().unwrap();
    drop(an);
    store
        .with(|c| {
            c.execute_batch(
                "UPDATE series SET outage_group =
                     (SELECT outage_id FROM outage_members m WHERE m.series_id = series.id);
                 DROP TABLE outage_members;
                 ALTER TABLE series DROP COLUMN orphaned_ms;
                 UPDATE outages SET tenant = '';
                 ALTER TABLE notifications DROP COLUMN uid;
                 DROP TABLE checks; DROP TABLE check_pings; DROP TABLE ping_keys;
                 DROP TABLE agent_settings;
                 PRAGMA user_version = 7;",
            )
        })
        .unwrap();
    drop(store);
    let store = Store::open_dir(dir.path()).unwrap();
    let mut again = analyzer(&store, Settings::default());
    feed(&mut again, T0 + 20 * S, 10, &plan, &|_, _, _| false);
    again.checkpoint().unwrap();
    assert_eq!(outage_events(&store), start_and_end("target", "10.6.2.1"));
    let end = end_event(&store);
    assert_eq!(end.tenant, "acme");
    assert_eq!(end.detail["series"], 2);
}

mod memory;
mod retire;

/// Probes in all minute buckets stored.
fn stored_probes(store: &Store) -> i64 {
    store
        .with(|c| {
            c.query_row(
                "SELECT COALESCE(SUM(probes), 0) FROM minute_buckets",
                [],
                |r| r.get(0),
            )
        })
        .unwrap()
}

#[test]
fn a_checkpoint_that_cannot_be_written_loses_nothing_and_counts_nothing_twice() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let plan = [
        ("edge-1", hosts("10.6.2", 1..6)),
        ("edge-2", hosts("10.6.2", 1..6)),
    ];
    let down = |a: &str, _: &str, r: i64| a == "edge-1" && (5..20).contains(&r);
    feed(&mut an, T0, 10, &plan, &down);
    // The store refuses writes: the outage start, the buckets and the
    // series rows go back into the analyzer.
    store
        .with(|c| c.execute_batch("PRAGMA query_only = 1"))
        .unwrap();
    assert!(an.checkpoint().is_err());
    feed(&mut an, T0 + 10 * S, 10, &plan, &|a, t, r| {
        down(a, t, r + 10)
    });
    assert!(an.checkpoint().is_err());
    feed(&mut an, T0 + 20 * S, 10, &plan, &|a, t, r| {
        down(a, t, r + 20)
    });
    store
        .with(|c| c.execute_batch("PRAGMA query_only = 0"))
        .unwrap();
    an.checkpoint().unwrap();
    // 2 agents × 5 targets × 30 rounds, each once.
    assert_eq!(stored_probes(&store), 300);
    assert_eq!(
        outage_events(&store),
        start_and_end("agent-network", "acme/edge-1")
    );
    assert_eq!(end_event(&store).detail["lost"], 5 * 15);
    // Nothing left over for the next one.
    an.checkpoint().unwrap();
    assert_eq!(stored_probes(&store), 300);
    assert_eq!(outage_events(&store).len(), 2);
}

/// `entry` as the log hands it over, at position `id`.
fn logged(id: i64, agent: &str, records: Vec<Record>) -> crate::log::Entries {
    let mut e = entry(agent, records);
    e.id = id;
    vec![Arc::new(crate::log::Entry::decode(e))]
}

#[tokio::test]
async fn the_next_entries_are_applied_while_a_checkpoint_is_written() {
    use crate::log::consumer::Consumer as _;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let an = analyzer(&store, Settings::default());
    let handle = an.handle();
    let mut f = Follower::new(an);
    f.last_prune = Some(Instant::now());
    let t = "10.6.3.1";
    f.apply(logged(1, "edge-1", vec![ping(t, T0, Some(1.0))]))
        .await
        .unwrap();
    // Something else holds the store's writer connection: the
    // checkpoint's write waits for it.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let store = store.clone();
        std::thread::spawn(move || {
            store
                .with(|_| {
                    held_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
                .unwrap();
        })
    };
    held_rx.recv().unwrap();
    f.checkpoint().await.unwrap();
    assert!(
        f.writing.is_some(),
        "the checkpoint is written in the background"
    );
    assert!(
        handle.writing.try_lock().is_err(),
        "a rebuilt analyzer would wait for the write"
    );
    // Applied while the write waits.
    f.apply(logged(2, "edge-1", vec![ping(t, T0 + S, Some(3.0))]))
        .await
        .unwrap();
    assert_eq!((f.position(), f.durable()), (2, 0));
    // No checkpoint is due while one is written: its end wakes the driver.
    assert!(
        f.due()
            .is_some_and(|d| d > Instant::now() + Duration::from_secs(60))
    );
    assert!(f.wake().is_some());
    let wake = f.wake().unwrap();
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    // The write's end wakes the driver, whose tick then finds it written.
    wake.notified().await;
    f.tick().await.unwrap();
    assert!(f.writing.is_none());
    assert_eq!(f.durable(), 1);
    assert_eq!(stored_probes(&store), 1);
    f.finish().await;
    assert_eq!(f.durable(), 2);
    assert_eq!(stored_probes(&store), 2);
    // What a restart finds: both results, once.
    let again = analyzer(&store, Settings::default());
    assert_eq!(again.position, 2);
    let s = again.handle();
    let book = s.read();
    let series = book.get(&key("edge-1", t)).unwrap();
    assert_eq!(series.averages(T0 + S).m1.probes, 2);
}
