//! The agent's on-disk write-ahead spool of result batches.
//!
//! Every sealed batch is written here, and fsync'd, before it is sent; it
//! stays until the collector acknowledges it (`Ack` is cumulative). So a
//! collector outage, a network cut or an agent `kill -9` loses nothing that
//! was sealed, and replay after reconnect is in `batch_seq` order.
//!
//! # On-disk format
//!
//! Directory `STATE_DIR/spool/`:
//!
//! | file | content |
//! | --- | --- |
//! | `meta` | `spool_id: u64 LE`, `acked: u64 LE`, `crc32c: u32 LE` of the 16 bytes before; replaced atomically (write `meta.tmp`, fsync, rename, fsync directory) |
//! | `SEQ.seg` | a segment; `SEQ` is the 20-digit zero-padded `batch_seq` of its first record, so name order is replay order |
//!
//! A segment starts with the 8-byte magic `SONDSPL1`, followed by records:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | `len: u32 LE`, length of the payload (at most [`MAX_RECORD`]) |
//! | 4 | `crc: u32 LE`, CRC-32C of every byte after this field (header rest + payload) |
//! | 8 | `batch_seq: u64 LE` |
//! | 8 | `sealed_unix_nanos: i64 LE` |
//! | 4 | `results: u32 LE`, results in the batch (gap records not counted) |
//! | 8 | `gapped: u64 LE`, sum of `Gap.dropped` over the batch's gap records |
//! | len | payload: the prost-encoded `sonde.v1.ResultBatch` |
//!
//! # Durability and recovery
//!
//! Records are only appended, to the newest segment, and each append is
//! `fdatasync`'d before [`Spool::append`] returns (one sync per batch, about
//! one a second). After a crash the newest segment may end in a torn record:
//! on open every segment is scanned, and the first record that is short or
//! fails its CRC ends the segment — the file is truncated there and a
//! warning says how many bytes were discarded. A torn record was never
//! acknowledged to anyone, so nothing acknowledged is lost.
//!
//! `meta` is written before segments are deleted on acknowledgement, and the
//! newest segment is never deleted without first starting a new one, so the
//! highest `batch_seq` ever assigned is always on disk and numbers are never
//! reused within a spool.
//!
//! # Caps
//!
//! The spool is bounded by total size (default 256 MiB) and by age (default
//! 24 h). When a cap is exceeded the oldest segments are deleted whether or
//! not they were acknowledged, and a batch holding one `Gap` record (time
//! range and number of results dropped) is appended at once, so the loss is
//! durable and visible at the collector. An unacknowledged gap batch that is
//! itself dropped later is folded into the new gap: the gaps that reach the
//! collector always add up to every result the spool dropped.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use sonde_proto::v1::{Gap, Record, ResultBatch, record};

/// Segment file magic.
pub const MAGIC: &[u8; 8] = b"SONDSPL1";
/// Record header length (everything before the payload).
pub const HEADER: usize = 36;
/// Largest payload accepted (a batch is far smaller in practice).
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Spool bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Total bytes of all segments.
    pub max_bytes: u64,
    /// Oldest batch kept (by seal time).
    pub max_age: Duration,
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self::new(256 * 1024 * 1024, Duration::from_secs(24 * 3600))
    }
}

impl SpoolLimits {
    /// Limits with a segment size of 1/8 of `max_bytes` (at most 8 MiB), so
    /// the cap drops data in small steps.
    pub fn new(max_bytes: u64, max_age: Duration) -> Self {
        Self {
            max_bytes,
            max_age,
            segment_bytes: (max_bytes / 8).clamp(4096, 8 * 1024 * 1024),
        }
    }
}

/// What can go wrong with the spool; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("batch of {0} bytes exceeds the spool's record limit of {MAX_RECORD} bytes")]
    TooLarge(usize),
}

type Result<T, E = SpoolError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where one batch lives.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    sealed_ns: i64,
    results: u32,
    gapped: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    entries: VecDeque<Entry>,
}

impl Segment {
    fn last_seq(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }
}

/// What opening the spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes discarded from torn or corrupt segment tails.
    pub discarded_bytes: u64,
    /// Segments that had such a tail.
    pub damaged_segments: Vec<PathBuf>,
}

/// Counters for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    pub bytes: u64,
    pub segments: usize,
    pub batches: usize,
    pub unacked_batches: usize,
    /// Results dropped by the caps since the spool was opened.
    pub dropped_results: u64,
}

/// The spool. Not thread-safe: one owner appends, reads and acknowledges.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    id: u64,
    acked: u64,
    next_seq: u64,
    segments: VecDeque<Segment>,
    active: Option<File>,
    dropped_results: u64,
}

fn seg_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from torn tails.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<(Self, Recovery)> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let (id, acked) = read_meta(dir)?;
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| {
                let path = e.ok()?.path();
                let seq = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()?;
                Some((seq, path))
            })
            .collect();
        names.sort();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        for (first_seq, path) in names {
            let (segment, discarded) = scan_segment(first_seq, &path)?;
            if discarded > 0 {
                tracing::warn!(
                    path = %path.display(),
                    discarded_bytes = discarded,
                    "spool segment had a torn or corrupt tail; truncated it"
                );
                recovery.discarded_bytes += discarded;
                recovery.damaged_segments.push(path.clone());
            }
            if segment.entries.is_empty() {
                // Nothing usable (e.g. a crash right after creating it).
                fs::remove_file(&path).map_err(io(&path))?;
            } else {
                segments.push_back(segment);
            }
        }
        let last = segments.back().and_then(Segment::last_seq).unwrap_or(0);
        // Only a damaged or forged file gets here (2^64 batches).
        let mut spool = Self {
            dir: dir.to_owned(),
            limits,
            id,
            acked,
            next_seq: last.max(acked).saturating_add(1),
            segments,
            active: None,
            dropped_results: 0,
        };
        fsync_dir(dir)?;
        // Fully acknowledged segments left by a crash between meta and delete.
        spool.delete_acked()?;
        Ok((spool, recovery))
    }

    /// Only a damaged or forged file numbers a batch 2^64 - 1.
    fn exhausted(&self) -> SpoolError {
        SpoolError::Corrupt {
            path: self.dir.clone(),
            reason:
                "batch numbers are exhausted (a batch or the acknowledgement is numbered 2^64-1)"
                    .into(),
        }
    }

    /// The random identity of this spool (see `Hello.spool_id`).
    pub fn spool_id(&self) -> u64 {
        self.id
    }

    /// Highest acknowledged `batch_seq`.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The `batch_seq` the next batch will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Current size and counts.
    pub fn stats(&self) -> SpoolStats {
        let batches: usize = self.segments.iter().map(|s| s.entries.len()).sum();
        let unacked = self
            .segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.seq > self.acked)
            .count();
        SpoolStats {
            bytes: self.segments.iter().map(|s| s.bytes).sum(),
            segments: self.segments.len(),
            batches,
            unacked_batches: unacked,
            dropped_results: self.dropped_results,
        }
    }

    /// Seals `records` into the next batch, writes and syncs it, then
    /// enforces the caps. Returns the batch's `batch_seq`.
    pub fn append(&mut self, records: Vec<Record>, now_ns: i64) -> Result<u64> {
        let seq = self.write_batch(records, now_ns)?;
        self.enforce(now_ns)?;
        Ok(seq)
    }

    fn write_batch(&mut self, records: Vec<Record>, now_ns: i64) -> Result<u64> {
        let seq = self.next_seq;
        if seq == u64::MAX {
            return Err(self.exhausted());
        }
        let results = sonde_proto::records::results(&records);
        let gapped = sonde_proto::records::gapped(&records);
        let batch = ResultBatch {
            batch_seq: seq,
            sealed_unix_nanos: now_ns,
            records,
        };
        let payload = batch.encode_to_vec();
        if payload.len() > MAX_RECORD {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let results = u32::try_from(results).unwrap_or(u32::MAX);
        let needs_new = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.limits.segment_bytes)
            || self.active.is_none();
        if needs_new {
            self.start_segment(seq)?;
        }
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        let len = u32::try_from(payload.len()).map_err(|_| SpoolError::TooLarge(payload.len()))?;
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&[0; 4]);
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(&now_ns.to_le_bytes());
        rec.extend_from_slice(&results.to_le_bytes());
        rec.extend_from_slice(&gapped.to_le_bytes());
        rec.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&rec[8..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());

        let segment = self.segments.back_mut().expect("segment just ensured");
        let file = self.active.as_mut().expect("active segment open");
        let offset = segment.bytes;
        let written = file.write_all(&rec).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // A disk that fills up takes part of a record. Cut it off, so
            // the next record follows the last whole one (its offset is
            // the one recorded) and a restart does not stop reading at
            // it; when even that fails, the next batch opens a new segment.
            if file
                .set_len(offset)
                .and_then(|()| file.sync_data())
                .is_err()
            {
                self.active = None;
            }
            return Err(io(&segment.path)(e));
        }
        segment.bytes += rec.len() as u64;
        segment.entries.push_back(Entry {
            seq,
            sealed_ns: now_ns,
            results,
            gapped,
            offset,
            len,
        });
        self.next_seq += 1;
        Ok(seq)
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<()> {
        let path = self.dir.join(seg_name(first_seq));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let started = file
            .write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(io(&path))
            .and_then(|()| fsync_dir(&self.dir));
        if let Err(e) = started {
            // Disk full: leave no half-made segment whose name the next
            // attempt (same first batch number) would collide with.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.segments.push_back(Segment {
            path,
            bytes: MAGIC.len() as u64,
            entries: VecDeque::new(),
        });
        self.active = Some(file);
        Ok(())
    }

    /// The first stored batch with `batch_seq > after`: its number and the
    /// batch, decoded (one that does not decode, or holds another number,
    /// comes back as a gap counting its results). Batches deleted by a cap
    /// are skipped (their loss was recorded as a gap).
    pub fn read_after(&self, after: u64) -> Result<Option<(u64, ResultBatch)>> {
        for segment in &self.segments {
            if segment.last_seq().is_none_or(|last| last <= after) {
                continue;
            }
            let idx = segment.entries.partition_point(|e| e.seq <= after);
            let Some(entry) = segment.entries.get(idx) else {
                continue;
            };
            let mut file = File::open(&segment.path).map_err(io(&segment.path))?;
            file.seek(SeekFrom::Start(entry.offset + HEADER as u64))
                .map_err(io(&segment.path))?;
            let mut payload = vec![0; entry.len as usize];
            file.read_exact(&mut payload).map_err(io(&segment.path))?;
            let problem = match ResultBatch::decode(payload.as_slice()) {
                Ok(batch) if batch.batch_seq == entry.seq => return Ok(Some((entry.seq, batch))),
                Ok(batch) => format!("holds batch {} instead", batch.batch_seq),
                Err(e) => format!("does not decode: {e}"),
            };
            // Its checksum holds but it is not this batch (a bug, or a disk
            // that lies): send a gap for it instead, so the loss is counted
            // and the spool does not stall on it forever.
            tracing::error!(path = %segment.path.display(), batch_seq = entry.seq, problem = %problem,
                "spooled batch is damaged; sending a gap record in its place");
            let batch = damaged(entry, &problem);
            return Ok(Some((entry.seq, batch)));
        }
        Ok(None)
    }

    /// Records that every batch up to `seq` is durable at the collector and
    /// deletes segments that hold nothing newer.
    pub fn ack(&mut self, seq: u64) -> Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        // Never acknowledge past what was assigned (a confused collector).
        self.acked = seq.min(self.next_seq - 1);
        write_meta(&self.dir, self.id, self.acked)?;
        self.delete_acked()
    }

    fn delete_acked(&mut self) -> Result<()> {
        while let Some(front) = self.segments.front() {
            let done = front.last_seq().is_some_and(|l| l <= self.acked);
            if !done {
                break;
            }
            if self.segments.len() == 1 {
                // The newest segment holds the highest seq; keep the file
                // (it is small) unless a new one takes over.
                break;
            }
            let segment = self.segments.pop_front().expect("front exists");
            fs::remove_file(&segment.path).map_err(io(&segment.path))?;
        }
        fsync_dir(&self.dir)
    }

    /// Applies the size and age caps (also called by [`Spool::append`]).
    pub fn enforce(&mut self, now_ns: i64) -> Result<()> {
        let max_age = i64::try_from(self.limits.max_age.as_nanos()).unwrap_or(i64::MAX);
        let too_old = |s: &Segment| {
            s.entries
                .back()
                .is_some_and(|e| now_ns.saturating_sub(e.sealed_ns) > max_age)
        };
        let mut lost = Lost::default();
        loop {
            let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
            let Some(front) = self.segments.front() else {
                break;
            };
            if total <= self.limits.max_bytes && !too_old(front) {
                break;
            }
            if self.segments.len() == 1 {
                // Keep the highest seq on disk: continue in a new segment
                // first (the gap batch below goes there).
                self.active = None;
                self.start_segment(self.next_seq)?;
            }
            let segment = self.segments.pop_front().expect("front exists");
            for entry in segment.entries.iter().filter(|e| e.seq > self.acked) {
                lost.add(&segment.path, entry);
            }
            fs::remove_file(&segment.path).map_err(io(&segment.path))?;
        }
        if lost.batches > 0 {
            fsync_dir(&self.dir)?;
            self.dropped_results = self.dropped_results.saturating_add(lost.results);
            tracing::warn!(
                batches = lost.batches,
                results = lost.results,
                earlier_gaps = lost.gapped,
                "spool cap reached: dropped unacknowledged data, recording a gap"
            );
            let gap = Gap {
                from_unix_nanos: lost.from,
                to_unix_nanos: lost.to,
                dropped: lost.results.saturating_add(lost.gapped),
                reason: format!(
                    "agent spool cap reached ({} bytes, max age {})",
                    self.limits.max_bytes,
                    humantime::format_duration(self.limits.max_age)
                ),
            };
            self.write_batch(
                vec![Record {
                    kind: Some(record::Kind::Gap(gap)),
                }],
                now_ns,
            )?;
        }
        Ok(())
    }
}

/// What a cap is about to drop, summed up for the gap record.
#[derive(Debug, Default)]
struct Lost {
    batches: usize,
    results: u64,
    /// Results already counted in dropped gap records.
    gapped: u64,
    from: i64,
    to: i64,
}

impl Lost {
    fn add(&mut self, path: &Path, entry: &Entry) {
        let (mut from, mut to) = (entry.sealed_ns, entry.sealed_ns);
        if entry.gapped > 0 {
            // An earlier gap is being dropped: keep its time range (read it
            // before the file goes; this is rare). Its counts are in the
            // record header, so a record that cannot be read only loses
            // the range, and never stops the cap from dropping it.
            match read_gaps(path, entry) {
                Ok(gaps) => {
                    for g in gaps {
                        from = from.min(g.from_unix_nanos);
                        to = to.max(g.to_unix_nanos);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a dropped gap record's time range; using its sealing time");
                }
            }
        }
        if self.batches == 0 {
            (self.from, self.to) = (from, to);
        } else {
            self.from = self.from.min(from);
            self.to = self.to.max(to);
        }
        self.batches += 1;
        // Saturating: the counts come from headers a damaged file may hold.
        self.results = self.results.saturating_add(u64::from(entry.results));
        self.gapped = self.gapped.saturating_add(entry.gapped);
    }
}

/// The batch sent in place of a stored one that does not decode.
fn damaged(entry: &Entry, problem: &str) -> ResultBatch {
    ResultBatch {
        batch_seq: entry.seq,
        sealed_unix_nanos: entry.sealed_ns,
        records: vec![Record {
            kind: Some(record::Kind::Gap(Gap {
                from_unix_nanos: entry.sealed_ns,
                to_unix_nanos: entry.sealed_ns,
                dropped: u64::from(entry.results).saturating_add(entry.gapped),
                reason: format!("agent spool: stored batch {} {problem}", entry.seq),
            })),
        }],
    }
}

fn read_gaps(path: &Path, entry: &Entry) -> Result<Vec<Gap>> {
    let mut file = File::open(path).map_err(io(path))?;
    file.seek(SeekFrom::Start(entry.offset + HEADER as u64))
        .map_err(io(path))?;
    let mut payload = vec![0; entry.len as usize];
    file.read_exact(&mut payload).map_err(io(path))?;
    let batch = ResultBatch::decode(payload.as_slice()).map_err(|e| SpoolError::Corrupt {
        path: path.to_owned(),
        reason: format!("batch {}: {e}", entry.seq),
    })?;
    Ok(batch
        .records
        .into_iter()
        .filter_map(|r| match r.kind {
            Some(record::Kind::Gap(g)) => Some(g),
            _ => None,
        })
        .collect())
}

fn read_meta(dir: &Path) -> Result<(u64, u64)> {
    let path = dir.join("meta");
    match fs::read(&path) {
        Ok(bytes) => {
            let bad = |reason: &str| SpoolError::Corrupt {
                path: path.clone(),
                reason: reason.to_owned(),
            };
            if bytes.len() != 20 {
                return Err(bad("meta file is not 20 bytes"));
            }
            let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
            if crc32c::crc32c(&bytes[..16]) != crc {
                return Err(bad("meta file checksum mismatch"));
            }
            let id = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
            let acked = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
            Ok((id, acked))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = rand::random::<u64>().max(1);
            write_meta(dir, id, 0)?;
            Ok((id, 0))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

fn write_meta(dir: &Path, spool_id: u64, acked: u64) -> Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&spool_id.to_le_bytes());
    bytes.extend_from_slice(&acked.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("meta.tmp");
    let path = dir.join("meta");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fsync_dir(dir)
}

/// Reads a segment's records; truncates the file after the last good one.
/// Returns the segment and the number of bytes discarded.
fn scan_segment(first_seq: u64, path: &Path) -> Result<(Segment, u64)> {
    let data = fs::read(path).map_err(io(path))?;
    let mut segment = Segment {
        path: path.to_owned(),
        bytes: MAGIC.len() as u64,
        entries: VecDeque::new(),
    };
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        // Not even a header (crash while creating it): nothing to keep.
        let discarded = data.len() as u64;
        return Ok((segment, discarded));
    }
    let mut pos = MAGIC.len();
    let mut prev_seq = first_seq.saturating_sub(1);
    while let Some(entry) = parse_record(&data, pos, prev_seq) {
        segment.entries.push_back(entry);
        prev_seq = entry.seq;
        pos += HEADER + entry.len as usize;
    }
    let discarded = (data.len() - pos) as u64;
    if discarded > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(pos as u64).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    segment.bytes = pos as u64;
    Ok((segment, discarded))
}

/// One valid record at `pos`, or `None` for a torn/corrupt one.
fn parse_record(data: &[u8], pos: usize, prev_seq: u64) -> Option<Entry> {
    let header = data.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    if len as usize > MAX_RECORD {
        return None;
    }
    let body = data.get(pos + 8..pos + HEADER + len as usize)?;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if prev_seq.checked_add(1) != Some(seq) {
        return None;
    }
    Some(Entry {
        seq,
        sealed_ns: i64::from_le_bytes(header[16..24].try_into().ok()?),
        results: u32::from_le_bytes(header[24..28].try_into().ok()?),
        gapped: u64::from_le_bytes(header[28..36].try_into().ok()?),
        offset: pos as u64,
        len,
    })
}

#[cfg(test)]
mod tests;
