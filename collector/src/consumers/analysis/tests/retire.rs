//! Series a deleted definition made leave memory (`retire.rs`), come back
//! with their history when results still arrive, and the ingest-time
//! `max-series` cap.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::targets::{ManagedTarget, Spec};

const RANGE: &str = "10.9.0.0/24";

fn definition(enabled: bool) -> ManagedTarget {
    ManagedTarget {
        id: 1,
        tenant: "acme".into(),
        name: "lab".into(),
        spec: Spec {
            target: RANGE.into(),
            kind: Probe::Ping,
            port: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retention: None,
            agents: Vec::new(),
        },
        enabled,
        author: "sonde://acme/admin/ann".into(),
        created_ms: 0,
        updated_ms: 0,
    }
}

/// One round of results of `a1` for hosts `1..=n` of the range, host 1
/// lost.
fn round(an: &mut Analyzer, t: i64, n: u8) {
    let records = (1..=n)
        .map(|h| {
            let mut r = ping(RANGE, t, (h != 1).then_some(2.0));
            if let Some(record::Kind::Ping(p)) = r.kind.as_mut() {
                p.address = format!("10.9.0.{h}");
            }
            r
        })
        .collect();
    an.apply(&entry("a1", records));
}

fn settings() -> Settings {
    Settings {
        retire_after: Duration::from_secs(60),
        ..Settings::default()
    }
}

fn orphaned_rows(store: &Store) -> i64 {
    store
        .with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM series WHERE orphaned_ms IS NOT NULL",
                [],
                |r| r.get(0),
            )
        })
        .unwrap()
}

fn max_id(store: &Store) -> i64 {
    store
        .with(|c| c.query_row("SELECT MAX(id) FROM series", [], |r| r.get(0)))
        .unwrap()
}

fn in_memory(an: &Analyzer) -> usize {
    an.handle().read().len()
}

fn targets_in_memory(an: &Analyzer) -> Vec<String> {
    an.handle()
        .read()
        .iter()
        .map(|s| s.key.target.to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_deleted_definitions_series_leave_memory_and_come_back_with_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let (tx, rx) = watch::channel(Arc::new(vec![definition(true)]));
    let mut an = analyzer(&store, settings()).with_targets(rx.clone());
    for r in 0..5 {
        round(&mut an, T0 + r * S, 4);
    }
    an.checkpoint().unwrap();
    assert_eq!(in_memory(&an), 4);
    let first = an.handle().read().iter().map(|s| s.id).collect::<Vec<_>>();
    assert!(
        an.handle().read().iter().any(|s| s.outage.open().is_some()),
        "host 1 is down"
    );

    // Deleted: the series stay while results may still be in flight.
    tx.send(Arc::new(Vec::new())).unwrap();
    an.follow_targets(false);
    an.checkpoint().unwrap();
    assert_eq!(orphaned_rows(&store), 4, "the orphans are recorded");
    tokio::time::advance(Duration::from_secs(59)).await;
    an.checkpoint().unwrap();
    assert_eq!(in_memory(&an), 4);
    tokio::time::advance(Duration::from_secs(2)).await;
    an.checkpoint().unwrap();
    assert_eq!(
        in_memory(&an),
        0,
        "retired after retire-after without results"
    );
    assert_eq!(
        an.stats.retired.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    let open: i64 = store
        .with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM series WHERE outage IS NOT NULL",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(open, 0, "the down host's outage ended when it left");
    let history: i64 = store
        .with(|c| c.query_row("SELECT COUNT(*) FROM minute_buckets", [], |r| r.get(0)))
        .unwrap();
    assert!(history > 0, "the history stays in the store");

    // A restart does not bring them back.
    drop(an);
    let mut an = analyzer(&store, settings()).with_targets(rx.clone());
    assert_eq!(in_memory(&an), 0);

    // A late batch (an agent that was offline) brings them back with
    // their ids and history, as orphans that leave again.
    round(&mut an, T0 + 5 * S, 4);
    an.checkpoint().unwrap();
    let back = an.handle().read().iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(back, first);
    let s = an.handle().read().by_id(first[1]).cloned().unwrap();
    assert_eq!(s.minutes.get(T0.div_euclid(60 * S)).probes, 6);
    tokio::time::advance(Duration::from_secs(61)).await;
    an.checkpoint().unwrap();
    assert_eq!(in_memory(&an), 0);

    // Defined again: the same series, adopted for good.
    tx.send(Arc::new(vec![definition(true)])).unwrap();
    an.follow_targets(false);
    round(&mut an, T0 + 6 * S, 4);
    an.checkpoint().unwrap();
    tokio::time::advance(Duration::from_secs(600)).await;
    an.checkpoint().unwrap();
    assert_eq!(in_memory(&an), 4);
    assert_eq!(orphaned_rows(&store), 0);
    assert_eq!(max_id(&store), *first.iter().max().unwrap());
}

#[tokio::test(start_paused = true)]
async fn create_and_delete_a_hundred_times_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    let mut an = analyzer(&store, settings()).with_targets(rx);
    let mut t = T0;
    for _ in 0..100 {
        tx.send(Arc::new(vec![definition(true)])).unwrap();
        an.follow_targets(false);
        round(&mut an, t, 254);
        an.checkpoint().unwrap();
        assert_eq!(in_memory(&an), 254);
        // Disabled this time; results still in flight after it.
        tx.send(Arc::new(vec![definition(false)])).unwrap();
        an.follow_targets(false);
        round(&mut an, t + S, 254);
        t += 2 * S;
        tokio::time::advance(Duration::from_secs(61)).await;
        an.checkpoint().unwrap();
        assert_eq!(in_memory(&an), 0);
    }
    assert_eq!(max_id(&store), 254, "ids are reused, not renewed");
    assert_eq!(an.handle().read().index_entries(), (0, 0, 0));
    assert_eq!(an.handle().read().names_held(), 0, "interned names left");
    assert!(an.correlator.is_idle());
    assert_eq!(an.retirement.orphans(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_series_only_a_removed_definition_explains_is_an_orphan_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let (tx, rx) = watch::channel(Arc::new(vec![definition(true)]));
    let mut an = analyzer(&store, settings()).with_targets(rx);
    tx.send(Arc::new(Vec::new())).unwrap();
    an.follow_targets(false);
    // The first results arrive after the deletion.
    round(&mut an, T0, 3);
    // And an agent's own target, never managed, stays.
    an.apply(&entry("a1", vec![ping("10.8.0.1", T0, Some(1.0))]));
    an.checkpoint().unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    an.checkpoint().unwrap();
    let left = targets_in_memory(&an);
    assert_eq!(left, ["10.8.0.1"]);
}

#[tokio::test(start_paused = true)]
async fn a_tenant_at_its_max_series_gets_no_new_series() {
    let text = "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
         [access]\noperator-tenants = [\"noc\"]\n\
         [[tenant]]\nname = \"acme\"\nprefixes = [\"10.9.0.0/24\"]\nmax-series = 2\n";
    let config: crate::Config =
        sonde_runtime::config::Source::from_text(Path::new("t.toml"), text.to_owned())
            .parse()
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let (_tx, rx) = watch::channel(Arc::new(config));
    let mut an = analyzer(&store, settings()).with_config(rx);
    round(&mut an, T0, 3);
    round(&mut an, T0 + S, 3);
    assert_eq!(in_memory(&an), 2);
    assert_eq!(
        an.stats.refused.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // An operator tenant's agents are the operator's own: not limited.
    for r in 0..2 {
        let mut e = entry(
            "n1",
            (1..=3)
                .map(|h| ping(&format!("10.9.0.{h}"), T0 + r * S, Some(1.0)))
                .collect(),
        );
        e.tenant = "noc".into();
        an.apply(&e);
    }
    assert_eq!(in_memory(&an), 5);
}

#[tokio::test(start_paused = true)]
async fn a_series_without_results_for_the_retention_leaves_unless_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let mut an = analyzer(&store, settings()).with_retention(Duration::from_secs(86_400));
    // An agent's own targets: 10.8.0.1 answers, 10.8.0.2 is down.
    for r in 0..5 {
        let records = vec![
            ping("10.8.0.1", T0 + r * S, Some(1.0)),
            ping("10.8.0.2", T0 + r * S, None),
        ];
        an.apply(&entry("a1", records));
    }
    an.checkpoint().unwrap();
    tokio::time::advance(Duration::from_secs(86_400 - 60)).await;
    an.prune().unwrap();
    an.checkpoint().unwrap();
    assert_eq!(in_memory(&an), 2, "not yet a retention without results");
    tokio::time::advance(Duration::from_secs(120)).await;
    an.prune().unwrap();
    an.checkpoint().unwrap();
    let left = targets_in_memory(&an);
    assert_eq!(left, ["10.8.0.2"], "an open outage is not forgotten");
}
