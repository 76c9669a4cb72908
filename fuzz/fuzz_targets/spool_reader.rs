//! The agent's spool reader: any bytes as a segment file (and optionally a
//! `meta` file) in a spool directory. Opening recovers or fails with an
//! error naming the file; every record it then returns reads back as a
//! batch of its own number (or a gap in its place); never a panic.
//!
//! Input: `flags` byte, then (when `flags & 1`) 16 bytes of `meta`, then
//! the segment. With `flags & 2` the target fixes every record's CRC, so
//! the fuzzer reaches the payload decoding behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_agent::spool::{HEADER, Spool, SpoolLimits};

/// Rewrites each record's CRC field to match its bytes.
fn fix_crcs(segment: &mut [u8]) {
    let mut pos = 8;
    while pos + HEADER <= segment.len() {
        let len = u32::from_le_bytes(segment[pos..pos + 4].try_into().unwrap()) as usize;
        let end = (pos + HEADER).saturating_add(len).min(segment.len());
        let crc = crc32c::crc32c(&segment[pos + 8..end]);
        segment[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let dir = sonde_fuzz::workdir().scratch.join("spool");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("spool dir");
    if flags & 1 != 0 && rest.len() >= 16 {
        let mut meta = rest[..16].to_vec();
        meta.extend_from_slice(&crc32c::crc32c(&rest[..16]).to_le_bytes());
        std::fs::write(dir.join("meta"), meta).expect("write meta");
        rest = &rest[16..];
    }
    let mut segment = rest.to_vec();
    if flags & 2 != 0 {
        fix_crcs(&mut segment);
    }
    std::fs::write(dir.join("00000000000000000001.seg"), &segment).expect("write segment");
    let limits = SpoolLimits::new(64 * 1024 * 1024, std::time::Duration::from_secs(86_400));
    let (mut spool, _) = match Spool::open(&dir, limits) {
        Ok(opened) => opened,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("spool"),
                "spool error names no path: {message}"
            );
            return;
        }
    };
    let mut after = spool.acked();
    let mut seen = 0;
    while let Some((seq, batch)) = spool.read_after(after).expect("read a recovered record") {
        assert!(seq > after, "read_after({after}) returned {seq}");
        assert_eq!(
            batch.batch_seq, seq,
            "a batch read back under another number"
        );
        after = seq;
        seen += 1;
        assert!(
            seen <= segment.len() / HEADER,
            "more records than bytes allow"
        );
    }
    // The recovered spool takes new batches after the highest number seen
    // (unless a forged file used up the numbers: then it says so).
    match spool.append(Vec::new(), 1) {
        Ok(next) => {
            assert!(next > after, "new batch {next} not after recovered {after}");
            spool.ack(next).expect("ack");
        }
        Err(e) => assert!(
            e.to_string().contains("exhausted"),
            "append after recovery: {e}"
        ),
    }
});
