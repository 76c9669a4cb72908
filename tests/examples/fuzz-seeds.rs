//! Writes the seed inputs of the fuzz targets (`fuzz/`) from the current
//! protocol, spool format and sample configurations:
//! `cargo run -p sonde-tests --example fuzz-seeds -- fuzz/seeds`.
//! The fuzzers grow their corpus from these; `scripts/fuzz.sh` passes both.

use std::path::{Path, PathBuf};

use prost::Message as _;
use sonde_agent::spool::{Spool, SpoolLimits};
use sonde_proto::v1::agent_message::Kind;
use sonde_proto::v1::{
    AgentMessage, Gap, Heartbeat, Hello, PingResult, PingStatus, Record, ResultBatch, TcpResult,
    TcpStatus, TraceHop, TraceResult, record,
};

const NOW: i64 = 1_763_700_000_000_000_000;

fn records() -> Vec<Record> {
    let ping = |i: u8, ok: bool| Record {
        kind: Some(record::Kind::Ping(PingResult {
            target: "10.0.0.0/24".into(),
            address: format!("10.0.0.{i}"),
            sent_unix_nanos: NOW,
            rtt_nanos: if ok { 1_250_000 } else { 0 },
            status: if ok {
                PingStatus::Ok
            } else {
                PingStatus::Timeout
            } as i32,
            reply_ttl: 64,
            ..PingResult::default()
        })),
    };
    vec![
        ping(1, true),
        ping(2, false),
        Record {
            kind: Some(record::Kind::Tcp(TcpResult {
                target: "web.example".into(),
                address: "10.0.1.5".into(),
                port: 443,
                sent_unix_nanos: NOW,
                connect_nanos: 2_000_000,
                status: TcpStatus::Ok as i32,
                ..TcpResult::default()
            })),
        },
        Record {
            kind: Some(record::Kind::Trace(TraceResult {
                target: "2001:db8::9".into(),
                address: "2001:db8::9".into(),
                started_unix_nanos: NOW,
                hops: vec![
                    TraceHop {
                        ttl: 1,
                        address: "2001:db8::1".into(),
                        rtt_nanos: vec![300_000, 310_000],
                        probes: 3,
                    },
                    TraceHop {
                        ttl: 2,
                        address: "2001:db8::9".into(),
                        rtt_nanos: vec![900_000],
                        probes: 3,
                    },
                ],
                reached: true,
                path_hash: 42,
                ..TraceResult::default()
            })),
        },
        Record {
            kind: Some(record::Kind::Gap(Gap {
                from_unix_nanos: NOW - 60_000_000_000,
                to_unix_nanos: NOW,
                dropped: 120,
                reason: "spool full".into(),
            })),
        },
    ]
}

fn message(kind: Kind) -> Vec<u8> {
    AgentMessage { kind: Some(kind) }.encode_to_vec()
}

/// `flags`, then each message with its 2-byte length (`agent_message`'s format).
fn session(flags: u8, messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![flags];
    for m in messages {
        out.extend_from_slice(&u16::try_from(m.len()).expect("small").to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    config_seeds(&out.join("config"));
    agent_message_seeds(&out.join("agent_message"));
    spool_seeds(&out.join("spool_reader"));
    api_seeds(&out.join("api_query"));
    println!("seeds written under {}", out.display());
}

fn config_seeds(config: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, path) in [
        ("agent-sample.toml", "agent/agent.toml"),
        ("collector-sample.toml", "collector/collector.toml"),
    ] {
        write(
            config,
            name,
            &std::fs::read(root.join(path)).expect("sample config"),
        );
    }
}

fn agent_message_seeds(agent: &Path) {
    let batch = |seq: u64| {
        message(Kind::Batch(ResultBatch {
            batch_seq: seq,
            sealed_unix_nanos: NOW,
            records: records(),
        }))
    };
    let heartbeat = message(Kind::Heartbeat(Heartbeat {
        seq: 1,
        uptime_ms: 5_000,
        sent_unix_nanos: NOW,
    }));
    let hello = message(Kind::Hello(Hello {
        agent_version: "0.1.0".into(),
        heartbeat_interval_ms: 10_000,
        instance_id: 7,
        spool_id: 3,
        ..Hello::default()
    }));
    write(
        agent,
        "batches",
        &session(1, &[batch(1), heartbeat.clone(), batch(2)]),
    );
    write(
        agent,
        "replay",
        &session(3, &[batch(2), batch(1), batch(2)]),
    );
    write(
        agent,
        "own-hello",
        &session(0, &[hello.clone(), heartbeat.clone()]),
    );
    write(agent, "hello-twice", &session(1, &[hello, batch(1)]));
    write(agent, "zero-seq", &session(1, &[batch(0)]));
}

fn spool_seeds(spool: &Path) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let limits = SpoolLimits::new(64 * 1024 * 1024, std::time::Duration::from_secs(86_400));
    let (mut s, _) = Spool::open(tmp.path(), limits).expect("spool");
    for i in 0..3 {
        s.append(records(), NOW + i).expect("append");
    }
    s.ack(1).expect("ack");
    drop(s);
    let mut segments: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("spool dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let segment = std::fs::read(&segments[0]).expect("segment");
    let meta = std::fs::read(tmp.path().join("meta")).expect("meta");
    write(spool, "segment", &[&[0u8][..], &segment].concat());
    write(
        spool,
        "meta-and-segment",
        &[&[1u8][..], &meta[..16], &segment].concat(),
    );
    write(spool, "fixed-crc", &[&[2u8][..], &segment].concat());
    write(
        spool,
        "torn",
        &[&[0u8][..], &segment[..segment.len() - 7]].concat(),
    );
}

fn api_seeds(api: &Path) {
    let paths = [
        "/api/v1/whoami",
        "/api/v1/agents?tenant=acme",
        "/api/v1/agents/a1?tenant=acme",
        "/api/v1/events?before=0&limit=50&kind=outage-opened&agent=a1",
        "/api/v1/prefixes",
        "/api/v1/prefixes/10.0.0.0/24",
        "/api/v1/prefixes/10.0.0.0/25?probe=ping",
        "/api/v1/prefixes/2001:db8::/64",
        "/api/v1/series/a1/10.0.0.1?tenant=acme&probe=ping&from=0&to=9999999999999&step=60",
        "/api/v1/outages?open=true&tenant=acme",
        "/api/v1/replay?at=1763700000000",
        "/api/v1/status",
        "/api/v1/alerts?state=active",
        "/api/v1/silences",
        "/api/v1/targets?tenant=acme",
        "/api/v1/targets/definitions",
        "/api/v1/targets/1",
        "/prefixes/10.0.0.0/24",
        "/address/10.0.0.1",
    ];
    for (i, p) in paths.iter().enumerate() {
        for (j, selector) in [0u8, 2, 4].iter().enumerate() {
            write(
                api,
                &format!("get-{i:02}-{j}"),
                &[&[*selector][..], p.as_bytes()].concat(),
            );
        }
    }
    let posts: [(u8, &str); 3] = [
        (
            1 | 8,
            "/api/v1/targets\n{\"name\":\"web\",\"target\":\"10.0.0.9\",\"kind\":\"tcp\",\"port\":443,\"interval\":\"5s\"}",
        ),
        (
            1 | 8,
            "/api/v1/silences\n{\"matchers\":{\"agent\":\"a1\"},\"duration\":\"1h\",\"comment\":\"maintenance\"}",
        ),
        (
            1 | 16,
            "/api/v1/targets/1\n{\"name\":\"web\",\"target\":\"10.0.0.0/25\",\"kind\":\"ping\"}",
        ),
    ];
    for (i, (selector, text)) in posts.iter().enumerate() {
        write(
            api,
            &format!("write-{i}"),
            &[&[*selector][..], text.as_bytes()].concat(),
        );
    }
    write(api, "delete", b"\x19/api/v1/silences/1");
}
