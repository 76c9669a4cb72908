//! Faults, each with an exact count of what was delivered: a disk that
//! fills up under the agent's spool and under the collector's store,
//! a collector killed again and again during ingest, the export's server
//! killed during export, an agent cut off from the network, and an agent
//! whose clock jumps.

use std::time::Duration;

use prost::Message as _;
use sonde_agent::spool::{Spool, SpoolLimits};
use sonde_proto::v1::{PingResult, PingStatus, Record, ResultBatch, record};
use sonde_tests::tmpfs::Tmpfs;

fn ping(i: usize, pad: usize) -> Record {
    Record {
        kind: Some(record::Kind::Ping(PingResult {
            target: format!("r{i}"),
            address: "127.0.0.1".into(),
            sent_unix_nanos: i64::try_from(i).unwrap(),
            rtt_nanos: 1000,
            status: PingStatus::Ok as i32,
            error: "p".repeat(pad),
            reply_ttl: 64,
        })),
    }
}

/// The spool on a disk that fills up: appends fail with an error naming
/// the spool, nothing already written is damaged, and once there is room
/// again new batches follow the last whole one; after a restart every
/// batch that was appended successfully reads back, in order.
#[test]
fn spool_on_a_full_disk_keeps_every_batch_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "256k");
    let spool_dir = disk.path().join("spool");
    let limits = SpoolLimits::new(64 * 1024 * 1024, Duration::from_secs(86_400));
    let (mut spool, _) = Spool::open(&spool_dir, limits).unwrap();
    // Another file takes most of the disk.
    disk.fill("filler");
    std::fs::OpenOptions::new()
        .write(true)
        .open(disk.path().join("filler"))
        .unwrap()
        .set_len(200 * 1024)
        .unwrap();

    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut next = 0;
    // ~6 KiB batches: a few fit, then the disk is full; each refusal takes
    // part of a record with it (the test checks the free space moved).
    for _ in 0..40 {
        let records: Vec<_> = (next..next + 10).map(|i| ping(i, 500)).collect();
        match spool.append(records, 1) {
            Ok(seq) => accepted.push((seq, next)),
            Err(e) => {
                refused += 1;
                let msg = e.to_string();
                assert!(msg.contains(&spool_dir.display().to_string()), "{msg}");
                assert!(msg.contains("No space left"), "{msg}");
            }
        }
        next += 10;
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "accepted {accepted:?}, refused {refused}"
    );
    // Room again: the next batches are taken.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    for _ in 0..3 {
        let records: Vec<_> = (next..next + 10).map(|i| ping(i, 500)).collect();
        accepted.push((
            spool.append(records, 1).expect("append once there is room"),
            next,
        ));
        next += 10;
    }
    drop(spool);

    let (spool, recovery) = Spool::open(&spool_dir, limits).unwrap();
    let mut after = 0;
    let mut read = Vec::new();
    while let Some((seq, payload)) = spool.read_after(after).unwrap() {
        let batch = ResultBatch::decode(payload.as_slice()).unwrap();
        let Some(record::Kind::Ping(first)) = &batch.records[0].kind else {
            panic!("not a ping")
        };
        read.push((seq, first.target[1..].parse::<usize>().unwrap()));
        after = seq;
    }
    assert_eq!(
        read, accepted,
        "batches after restart (recovery: {recovery:?})"
    );
    // Numbers were not skipped for refused batches.
    let seqs: Vec<u64> = read.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}
