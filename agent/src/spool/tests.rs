use super::*;
use sonde_proto::v1::{PingResult, PingStatus};

const SEC: i64 = 1_000_000_000;

fn pings(n: usize, pad: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            kind: Some(record::Kind::Ping(PingResult {
                target: format!("127.0.0.{i}"),
                address: format!("127.0.0.{i}"),
                sent_unix_nanos: 1,
                rtt_nanos: 1000,
                status: PingStatus::Ok as i32,
                error: "x".repeat(pad),
                reply_ttl: 64,
            })),
        })
        .collect()
}

fn big() -> SpoolLimits {
    SpoolLimits::new(1 << 30, Duration::from_secs(24 * 3600))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_read_ack_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, rec) = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(rec, Recovery::default());
    let id = spool.spool_id();
    for i in 1..=5 {
        assert_eq!(
            spool.append(pings(3, 0), i * SEC).unwrap(),
            u64::try_from(i).unwrap()
        );
    }
    let (seq, bytes) = spool.read_after(0).unwrap().unwrap();
    assert_eq!(seq, 1);
    let batch = bytes;
    assert_eq!(
        (
            batch.batch_seq,
            batch.sealed_unix_nanos,
            batch.records.len()
        ),
        (1, SEC, 3)
    );
    assert_eq!(spool.read_after(4).unwrap().unwrap().0, 5);
    assert!(spool.read_after(5).unwrap().is_none());
    spool.ack(3).unwrap();
    assert_eq!(spool.stats().unacked_batches, 2);
    drop(spool);

    // Reopen: same identity, acknowledgement kept, numbering continues, the
    // unacknowledged batches replay in order.
    let (mut spool, rec) = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(rec, Recovery::default());
    assert_eq!(
        (spool.spool_id(), spool.acked(), spool.next_seq()),
        (id, 3, 6)
    );
    let replay: Vec<u64> =
        std::iter::successors(spool.read_after(spool.acked()).unwrap(), |(s, _)| {
            spool.read_after(*s).unwrap()
        })
        .map(|(s, _)| s)
        .collect();
    assert_eq!(replay, vec![4, 5]);
    assert_eq!(spool.append(pings(1, 0), 6 * SEC).unwrap(), 6);
    // The ack of everything deletes all but the newest segment.
    spool.ack(6).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(spool.read_after(6).unwrap().is_none());
}

#[test]
fn numbers_are_never_reused_after_everything_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = big();
    limits.segment_bytes = 4096;
    let (mut spool, _) = Spool::open(dir.path(), limits).unwrap();
    for i in 1..=20 {
        spool.append(pings(5, 100), i * SEC).unwrap();
    }
    spool.ack(20).unwrap();
    drop(spool);
    let (mut spool, _) = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(spool.next_seq(), 21);
    assert_eq!(spool.append(pings(1, 0), 21 * SEC).unwrap(), 21);
    // A collector acknowledging past what exists does not move us past it.
    spool.ack(1000).unwrap();
    assert_eq!(spool.acked(), 21);
}

#[test]
fn torn_tail_is_truncated_and_never_read_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), big()).unwrap();
    for i in 1..=3 {
        spool.append(pings(2, 10), i * SEC).unwrap();
    }
    drop(spool);
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // A crash in the middle of writing record 3.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let (mut spool, rec) = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(rec.damaged_segments, vec![seg.clone()]);
    assert!(rec.discarded_bytes > 0);
    assert_eq!(spool.read_after(1).unwrap().unwrap().0, 2);
    assert!(spool.read_after(2).unwrap().is_none());
    // Record 3 was never acknowledged to its producer; its number is free.
    assert_eq!(spool.append(pings(1, 0), 4 * SEC).unwrap(), 3);
    drop(spool);
    let (spool, rec) = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(rec, Recovery::default(), "the repair is durable");
    assert_eq!(spool.stats().batches, 3);
}

#[test]
fn corrupt_byte_and_garbage_tail_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), big()).unwrap();
    for i in 1..=3 {
        spool.append(pings(2, 10), i * SEC).unwrap();
    }
    drop(spool);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let last = data.len() - 5;
    data[last] ^= 0x40; // bit flip inside record 3's payload
    data.extend_from_slice(b"garbage after the end");
    fs::write(&seg, &data).unwrap();

    let (spool, rec) = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(rec.damaged_segments.len(), 1);
    assert_eq!(spool.stats().batches, 2);
    let batch = spool.read_after(1).unwrap().unwrap().1;
    assert_eq!(batch.batch_seq, 2);
}

#[test]
fn size_cap_drops_oldest_and_records_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits::new(64 * 1024, Duration::from_secs(3600));
    assert_eq!(limits.segment_bytes, 8 * 1024);
    let (mut spool, _) = Spool::open(dir.path(), limits).unwrap();
    // Each batch: 10 results of ~200 bytes, about 2.3 KiB.
    let mut seqs = Vec::new();
    for i in 1..=60 {
        seqs.push(spool.append(pings(10, 180), i * SEC).unwrap());
        assert!(
            spool.stats().bytes <= limits.max_bytes + limits.segment_bytes,
            "{:?}",
            spool.stats()
        );
    }
    let stats = spool.stats();
    assert!(stats.dropped_results > 0, "{stats:?}");
    assert_eq!(stats.dropped_results % 10, 0, "whole batches are dropped");

    // Walk what is left: the gap records account exactly for what is gone.
    let mut after = 0;
    let (mut present, mut gap_total, mut gaps) = (0u64, 0u64, 0);
    while let Some((seq, bytes)) = spool.read_after(after).unwrap() {
        for r in bytes.records {
            match r.kind {
                Some(record::Kind::Gap(g)) => {
                    gaps += 1;
                    gap_total += g.dropped;
                    assert!(g.reason.contains("spool cap"), "{}", g.reason);
                    assert!(g.from_unix_nanos <= g.to_unix_nanos);
                }
                Some(record::Kind::Ping(_)) => present += 1,
                _ => {}
            }
        }
        after = seq;
    }
    assert!(gaps > 0);
    assert_eq!(gap_total, stats.dropped_results);
    assert_eq!(
        present + gap_total,
        600,
        "every result is either present or counted in a gap"
    );
}

#[test]
fn age_cap_drops_old_batches_with_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = SpoolLimits::new(1 << 30, Duration::from_secs(60));
    limits.segment_bytes = 4096;
    let (mut spool, _) = Spool::open(dir.path(), limits).unwrap();
    for i in 1..=10 {
        spool.append(pings(10, 100), i * SEC).unwrap();
    }
    assert_eq!(spool.stats().dropped_results, 0);
    // Two hours later, nothing was acknowledged: everything is too old.
    spool.enforce(7200 * SEC).unwrap();
    assert_eq!(spool.stats().dropped_results, 100);
    let (seq, bytes) = spool.read_after(0).unwrap().unwrap();
    assert_eq!(seq, 11, "only the gap batch remains");
    let Some(record::Kind::Gap(gap)) = bytes.records[0].kind.clone() else {
        panic!("not a gap")
    };
    assert_eq!(
        (gap.dropped, gap.from_unix_nanos, gap.to_unix_nanos),
        (100, SEC, 10 * SEC)
    );
    // Acknowledged data that ages out is not a gap.
    spool.ack(11).unwrap();
    spool.append(pings(1, 0), 7201 * SEC).unwrap();
    spool.enforce(99_999 * SEC).unwrap();
    assert_eq!(spool.stats().dropped_results, 101);
}

#[test]
fn unusable_meta_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    drop(Spool::open(dir.path(), big()).unwrap());
    fs::write(dir.path().join("meta"), b"short").unwrap();
    let err = Spool::open(dir.path(), big()).unwrap_err().to_string();
    assert!(err.contains("meta") && err.contains("20 bytes"), "{err}");
}

/// A record whose checksum holds but whose payload is not a batch (found
/// by the `spool_reader` fuzz target): it is read as a gap counting its
/// results, the spool keeps going, and a cap can still drop it.
#[test]
fn undecodable_record_is_sent_as_a_gap_and_does_not_stall_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), big()).unwrap();
    let mut first = pings(4, 0);
    first.push(Record {
        kind: Some(record::Kind::Gap(Gap {
            from_unix_nanos: SEC,
            to_unix_nanos: 2 * SEC,
            dropped: 3,
            reason: "earlier".into(),
        })),
    });
    spool.append(first, 5 * SEC).unwrap();
    spool.append(pings(2, 0), 6 * SEC).unwrap();
    drop(spool);
    // Batch 1's payload becomes a field with the wrong wire type; the CRC
    // is made to match.
    let path = &segment_files(dir.path())[0];
    let mut bytes = fs::read(path).unwrap();
    let start = MAGIC.len();
    let len = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
    for b in &mut bytes[start + HEADER..start + HEADER + len] {
        *b = 0x18;
    }
    let crc = crc32c::crc32c(&bytes[start + 8..start + HEADER + len]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &bytes).unwrap();

    let (mut spool, rec) = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(rec, Recovery::default());
    let (seq, payload) = spool.read_after(0).unwrap().unwrap();
    let batch = payload;
    assert_eq!(
        (seq, batch.batch_seq, batch.sealed_unix_nanos),
        (1, 1, 5 * SEC)
    );
    let Some(record::Kind::Gap(gap)) = &batch.records[0].kind else {
        panic!("{batch:?}")
    };
    assert_eq!(gap.dropped, 4 + 3);
    assert!(
        gap.reason.contains("stored batch 1 does not decode"),
        "{}",
        gap.reason
    );
    assert_eq!(spool.read_after(1).unwrap().unwrap().1.records.len(), 2);
    // The age cap drops it like any other batch (its counts are in its
    // header), and the gap it writes still adds up.
    spool.limits = SpoolLimits::new(1 << 30, Duration::from_secs(1));
    spool.append(pings(1, 0), 100 * SEC).unwrap();
    assert_eq!(spool.stats().dropped_results, 6);
    let (_, payload) = spool.read_after(3).unwrap().unwrap();
    let gaps: u64 = payload
        .records
        .iter()
        .filter_map(|r| match &r.kind {
            Some(record::Kind::Gap(g)) => Some(g.dropped),
            _ => None,
        })
        .sum();
    assert_eq!(gaps, 4 + 3 + 2);
}

/// A checksummed record whose payload is another batch (number 7 stored
/// as batch 1; found by the `spool_reader` fuzz target) is sent as a gap
/// under its own number, never under the other.
#[test]
fn record_holding_another_batch_number_is_sent_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), big()).unwrap();
    spool.append(pings(3, 0), 5 * SEC).unwrap();
    drop(spool);
    let path = &segment_files(dir.path())[0];
    let mut bytes = fs::read(path).unwrap();
    let start = MAGIC.len();
    let other = ResultBatch {
        batch_seq: 7,
        sealed_unix_nanos: 5 * SEC,
        records: pings(3, 0),
    }
    .encode_to_vec();
    bytes.truncate(start + HEADER);
    bytes.extend_from_slice(&other);
    let len = u32::try_from(other.len()).unwrap();
    bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[start + 8..]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &bytes).unwrap();

    let (spool, rec) = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(rec, Recovery::default());
    let (seq, batch) = spool.read_after(0).unwrap().unwrap();
    assert_eq!((seq, batch.batch_seq), (1, 1));
    let Some(record::Kind::Gap(gap)) = &batch.records[0].kind else {
        panic!("{batch:?}")
    };
    assert_eq!(gap.dropped, 3);
    assert!(
        gap.reason.contains("holds batch 7 instead"),
        "{}",
        gap.reason
    );
}
