use prost::Message as _;
use sonde_proto::v1::{
    ListeningPort, ListeningPorts, PublicIpAnswer, PublicIpResult, PublicIpStatus, Record,
    RemoteCheckResult, ResultBatch, SystemMetrics, record,
};

use super::*;
use crate::log::{LogKind, LoggedBatch};
use crate::store::{EventQuery, EventRow, Scope};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    id: i64,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        Self {
            _dir: dir,
            store,
            id: 0,
        }
    }

    fn apply(&mut self, kind: record::Kind) {
        self.id += 1;
        let batch = ResultBatch {
            batch_seq: 1,
            sealed_unix_nanos: 0,
            records: vec![Record { kind: Some(kind) }],
        };
        let entry = LoggedBatch {
            id: self.id,
            kind: LogKind::Batch,
            tenant: "acme".into(),
            agent: "edge-1".into(),
            spool_id: 1,
            batch_seq: 1,
            received_ms: 0,
            results: 1,
            payload: batch.encode_to_vec(),
        };
        let entry = crate::log::Entry::decode(entry);
        self.store.with(|c| apply(c, &entry)).unwrap();
    }

    fn events(&self) -> Vec<EventRow> {
        let q = EventQuery {
            limit: 100,
            ..EventQuery::default()
        };
        self.store.events(&Scope::All, &q).unwrap()
    }

    fn view(&self) -> serde_json::Value {
        let key = AgentKey {
            tenant: "acme".into(),
            name: "edge-1".into(),
        };
        view::facts_of(&self.store, &key).unwrap()
    }
}

fn lookup(at: i64, status: PublicIpStatus, address: &str) -> record::Kind {
    record::Kind::PublicIp(PublicIpResult {
        checked_unix_nanos: at,
        family: "ipv4".into(),
        address: address.into(),
        status: status.into(),
        answers: vec![PublicIpAnswer {
            source: "http://127.0.0.1:1/ip".into(),
            address: address.into(),
            error: String::new(),
            duration_nanos: 1,
        }],
    })
}

#[test]
fn public_ip_history_and_one_event_per_change() {
    let mut f = Fixture::new();
    let (a, b) = ("203.0.113.7", "198.51.100.9");
    f.apply(lookup(1_000_000_000, PublicIpStatus::Ok, a));
    f.apply(lookup(2_000_000_000, PublicIpStatus::Ok, a));
    assert!(f.events().is_empty(), "the first address is a baseline");
    f.apply(lookup(3_000_000_000, PublicIpStatus::Disagree, ""));
    f.apply(lookup(4_000_000_000, PublicIpStatus::Failed, ""));
    assert!(f.events().is_empty(), "no verdict, no change");
    f.apply(lookup(5_000_000_000, PublicIpStatus::Ok, b));
    f.apply(lookup(6_000_000_000, PublicIpStatus::Ok, b));
    let events = f.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::IpChanged);
    assert_eq!(events[0].at_ms, 5_000);
    assert_eq!(events[0].detail["old"], a);
    assert_eq!(events[0].detail["new"], b);
    assert_eq!(events[0].detail["sources"][0], "http://127.0.0.1:1/ip");
    // An old lookup replayed late changes nothing.
    f.apply(lookup(2_500_000_000, PublicIpStatus::Ok, a));
    assert_eq!(f.events().len(), 1);
    let v = f.view();
    assert_eq!(v["public_ip"]["ipv4"], b);
    let history = v["public_ip"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[0]["address"].as_str(),
            history[0]["first_seen_ms"].as_i64(),
            history[0]["last_seen_ms"].as_i64()
        ),
        (Some(b), Some(5_000), Some(6_000))
    );
    assert_eq!(
        (
            history[1]["address"].as_str(),
            history[1]["first_seen_ms"].as_i64(),
            history[1]["last_seen_ms"].as_i64()
        ),
        (Some(a), Some(1_000), Some(2_000))
    );
    assert_eq!(v["public_ip"]["lookups"][0]["status"], "ok");
}

fn port(port: u32, program: &str, risk: &str) -> ListeningPort {
    ListeningPort {
        protocol: "tcp".into(),
        address: "0.0.0.0".into(),
        port,
        program: program.into(),
        pid: 42,
        uid: 0,
        user: "root".into(),
        loopback: false,
        service: String::new(),
        risk: risk.into(),
    }
}

fn snapshot(at: i64, ports: Vec<ListeningPort>) -> record::Kind {
    record::Kind::Ports(ListeningPorts {
        at_unix_nanos: at,
        ports,
        error: String::new(),
    })
}

#[test]
fn port_events_after_the_baseline() {
    let mut f = Fixture::new();
    f.apply(snapshot(1, vec![port(22, "sshd", "medium")]));
    assert!(f.events().is_empty());
    f.apply(snapshot(
        2,
        vec![port(22, "sshd", "medium"), port(23, "inetd", "high")],
    ));
    // A restarted daemon (new PID) is no event.
    let mut restarted = port(22, "sshd", "medium");
    restarted.pid = 43;
    f.apply(snapshot(3, vec![restarted, port(23, "inetd", "high")]));
    f.apply(snapshot(4, vec![port(23, "inetd", "high")]));
    let events: Vec<(EventKind, u64, String)> = f
        .events()
        .iter()
        .map(|e| {
            (
                e.kind,
                e.detail["port"].as_u64().unwrap(),
                e.detail["risk"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (EventKind::PortOpened, 23, "high".into()),
            (EventKind::PortClosed, 22, "medium".into()),
        ]
    );
    let v = f.view();
    assert_eq!(v["ports"]["ports"][0]["program"], "inetd");
    // A partial snapshot and the full one after it change nothing.
    f.apply(record::Kind::Ports(ListeningPorts {
        at_unix_nanos: 5,
        ports: Vec::new(),
        error: "/proc/self/net/tcp: permission denied".into(),
    }));
    f.apply(snapshot(6, vec![port(23, "inetd", "high")]));
    assert_eq!(f.events().len(), 2);
    assert_eq!(f.view()["ports"]["error"], "");
}

fn pass(at: i64, address: &str, open: &[u32]) -> record::Kind {
    record::Kind::RemoteCheck(RemoteCheckResult {
        started_unix_nanos: at,
        target: "gw:20-25,443".into(),
        address: address.into(),
        open: open.to_vec(),
        checked: 7,
        error: if address.is_empty() {
            "gw: no address".into()
        } else {
            String::new()
        },
        ..RemoteCheckResult::default()
    })
}

#[test]
fn remote_check_changes_are_events_and_failures_are_kept_apart() {
    let mut f = Fixture::new();
    f.apply(pass(1, "10.0.0.1", &[22]));
    f.apply(pass(2, "", &[]));
    assert!(f.events().is_empty());
    assert_eq!(f.view()["remote_checks"].as_array().unwrap().len(), 2);
    f.apply(pass(3, "10.0.0.1", &[22, 443]));
    assert_eq!(
        f.view()["remote_checks"].as_array().unwrap().len(),
        1,
        "a good pass clears the failure"
    );
    f.apply(pass(4, "10.0.0.1", &[443]));
    let events: Vec<(EventKind, serde_json::Value)> = f
        .events()
        .into_iter()
        .map(|e| (e.kind, e.detail["ports"].clone()))
        .collect();
    assert_eq!(
        events,
        [
            (EventKind::RemotePortOpened, serde_json::json!([443])),
            (EventKind::RemotePortClosed, serde_json::json!([22])),
        ]
    );
}

#[test]
fn latest_metrics_win() {
    let mut f = Fixture::new();
    let m = |at, load1| {
        record::Kind::Metrics(SystemMetrics {
            at_unix_nanos: at,
            load1,
            ..SystemMetrics::default()
        })
    };
    f.apply(m(2_000_000, 2.0));
    f.apply(m(1_000_000, 1.0));
    assert_eq!(f.view()["metrics"]["load"][0], 2.0);
    f.apply(m(3_000_000, 3.0));
    assert_eq!(f.view()["metrics"]["load"][0], 3.0);
    assert_eq!(f.view()["metrics"]["at_ms"], 3);
}
