//! The exporter's batching, retry and refusal handling against a scripted
//! sink, on tokio's paused clock.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use sonde_proto::v1::{PingResult, PingStatus, Record, ResultBatch, record};

use super::*;
use crate::store::AgentKey;

#[derive(Default)]
struct Script {
    /// Answers to successive writes; `Ok` once empty.
    answers: VecDeque<Result<(), WriteError>>,
    /// Bodies containing this are refused (HTTP 400).
    refuse: Option<&'static str>,
    /// Not ready for this many `ready()` calls.
    not_ready: u32,
    /// Every write attempt: when, and the body.
    attempts: Vec<(Instant, String)>,
    /// Bodies accepted.
    accepted: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeSink(Arc<Mutex<Script>>);

impl FakeSink {
    fn with<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

impl Sink for FakeSink {
    async fn write(&self, body: String) -> Result<(), WriteError> {
        self.with(|s| {
            s.attempts.push((Instant::now(), body.clone()));
            if let Some(bad) = s.refuse.filter(|b| body.contains(b)) {
                return Err(WriteError::Rejected {
                    status: 400,
                    message: format!("unable to parse '{bad}'"),
                });
            }
            let answer = s.answers.pop_front().unwrap_or(Ok(()));
            if answer.is_ok() {
                s.accepted.push(body);
            }
            answer
        })
    }

    async fn ready(&self) -> Result<(), WriteError> {
        self.with(|s| {
            if s.not_ready > 0 {
                s.not_ready -= 1;
                Err(WriteError::Retry {
                    reason: "starting".into(),
                    after: None,
                })
            } else {
                Ok(())
            }
        })
    }

    fn describe(&self) -> String {
        "fake".into()
    }
}

fn settings() -> Settings {
    Settings {
        batch_points: 5,
        batch_delay: Duration::from_secs(1),
        retry_initial: Duration::from_secs(1),
        retry_max: Duration::from_secs(8),
    }
}

/// Appends a batch of `targets.len()` ping results to the log.
fn ingest(store: &Store, seq: u64, targets: &[&str]) {
    let records = targets
        .iter()
        .enumerate()
        .map(|(i, t)| Record {
            kind: Some(record::Kind::Ping(PingResult {
                target: (*t).to_owned(),
                address: (*t).to_owned(),
                sent_unix_nanos: i64::try_from(seq * 1000 + i as u64).unwrap(),
                rtt_nanos: 1_000_000,
                status: PingStatus::Ok.into(),
                ..PingResult::default()
            })),
        })
        .collect();
    let batch = ResultBatch {
        batch_seq: seq,
        sealed_unix_nanos: 0,
        records,
    };
    let key = AgentKey {
        tenant: "acme".into(),
        name: "edge-1".into(),
    };
    let n = u32::try_from(targets.len()).unwrap();
    crate::log::SqliteLog::new(store.clone())
        .ingest(&key, 1, seq, n, &batch.encode_to_vec(), now_ms())
        .unwrap();
}

fn lines_in(bodies: &[String]) -> usize {
    bodies.iter().map(|b| b.lines().count()).sum()
}

/// Waits (in paused time) until `cond` holds; fails after 10 minutes.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached within 10 minutes of paused time");
}

fn spawn(
    store: &Store,
    sink: &FakeSink,
    stop: &CancellationToken,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let exporter = Exporter::new(store.clone(), sink.clone(), settings(), stop.clone());
    let handle = exporter.handle();
    (handle, tokio::spawn(exporter.run()))
}

#[tokio::test(start_paused = true)]
async fn batches_by_points_and_by_time() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let sink = FakeSink::default();
    sink.with(|s| s.not_ready = 2);
    ingest(&store, 1, &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    ingest(&store, 2, &["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"]);
    ingest(
        &store,
        3,
        &["10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12"],
    );
    let stop = CancellationToken::new();
    let started = Instant::now();
    let (handle, task) = spawn(&store, &sink, &stop);
    until(|| sink.with(|s| lines_in(&s.accepted)) == 12).await;
    let (sizes, times): (Vec<usize>, Vec<Instant>) = sink.with(|s| {
        s.attempts
            .iter()
            .map(|(t, b)| (b.lines().count(), *t))
            .unzip()
    });
    // Entries are never split: the first write holds two entries (8 ≥ 5
    // points), the last entry waits for the batch delay.
    assert_eq!(sizes, [8, 4]);
    assert!(times[1] - times[0] >= Duration::from_secs(1), "{times:?}");
    // Two not-ready answers delayed the start by backoff (≥ 0.5 s + 1 s).
    assert!(
        times[0] - started >= Duration::from_millis(1500),
        "{:?}",
        times[0] - started
    );
    let last = crate::log::SqliteLog::new(store.clone())
        .stored_after(0, 10)
        .unwrap()
        .last()
        .unwrap()
        .id;
    until(|| store.cursor(CURSOR).unwrap() == last).await;
    let status = handle.status(&store).unwrap();
    assert_eq!(
        (status.points_written, status.lag.entries, status.failing),
        (12, 0, false)
    );

    // New entries after catching up wake the exporter.
    ingest(&store, 4, &["10.0.0.13"]);
    until(|| sink.with(|s| lines_in(&s.accepted)) == 13).await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retries_honour_retry_after_then_back_off() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let sink = FakeSink::default();
    let retry = |after| WriteError::Retry {
        reason: "HTTP 503".into(),
        after,
    };
    sink.with(|s| {
        s.answers.extend([
            Err(retry(Some(Duration::from_secs(7)))),
            Err(retry(None)),
            Err(retry(None)),
            Ok(()),
        ]);
    });
    ingest(
        &store,
        1,
        &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"],
    );
    let stop = CancellationToken::new();
    let (handle, task) = spawn(&store, &sink, &stop);
    until(|| sink.with(|s| s.accepted.len()) == 1).await;
    let times: Vec<Instant> = sink.with(|s| s.attempts.iter().map(|(t, _)| *t).collect());
    assert_eq!(times.len(), 4);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // The server's Retry-After, exactly; then jittered backoff: [0.5, 1] s,
    // then [1, 2] s.
    assert_eq!(gaps[0], Duration::from_secs(7));
    assert!(
        (Duration::from_millis(500)..=Duration::from_secs(1)).contains(&gaps[1]),
        "{gaps:?}"
    );
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&gaps[2]),
        "{gaps:?}"
    );
    // The same body every time, accepted once.
    let bodies: Vec<String> = sink.with(|s| s.attempts.iter().map(|(_, b)| b.clone()).collect());
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    let status = handle.status(&store).unwrap();
    assert_eq!((status.points_written, status.write_failures), (5, 3));
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn refused_lines_are_isolated_logged_and_counted() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let sink = FakeSink::default();
    sink.with(|s| s.refuse = Some("bad-host"));
    ingest(
        &store,
        1,
        &[
            "10.0.0.1", "10.0.0.2", "bad-host", "10.0.0.4", "10.0.0.5", "10.0.0.6",
        ],
    );
    let stop = CancellationToken::new();
    let (handle, task) = spawn(&store, &sink, &stop);
    let last = crate::log::SqliteLog::new(store.clone())
        .stored_after(0, 10)
        .unwrap()
        .last()
        .unwrap()
        .id;
    until(|| store.cursor(CURSOR).unwrap() == last).await;
    let accepted = sink.with(|s| s.accepted.concat());
    assert_eq!(accepted.lines().count(), 5);
    assert!(!accepted.contains("bad-host"));
    for t in [
        "10.0.0.1,",
        "10.0.0.2,",
        "10.0.0.4,",
        "10.0.0.5,",
        "10.0.0.6,",
    ] {
        assert_eq!(accepted.matches(&format!("target={t}")).count(), 1, "{t}");
    }
    let status = handle.status(&store).unwrap();
    assert_eq!((status.points_written, status.points_rejected), (5, 1));
    // Not retried forever: 6 lines split down to the bad one is a handful
    // of requests, and nothing more happens afterwards.
    let attempts = sink.with(|s| s.attempts.len());
    assert!(attempts <= 7, "{attempts} attempts");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sink.with(|s| s.attempts.len()), attempts);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stopped_while_failing_keeps_everything_for_the_next_run() {
    let store = Store::open(Path::new(":memory:")).unwrap();
    let down = FakeSink::default();
    down.with(|s| {
        s.answers.extend((0..1000).map(|_| {
            Err(WriteError::Retry {
                reason: "connection refused".into(),
                after: None,
            })
        }));
    });
    ingest(&store, 1, &["10.0.0.1", "10.0.0.2"]);
    let stop = CancellationToken::new();
    let (handle, task) = spawn(&store, &down, &stop);
    until(|| down.with(|s| s.attempts.len()) >= 3).await;
    let status = handle.status(&store).unwrap();
    assert!(status.failing);
    assert_eq!((status.lag.entries, status.lag.results), (1, 2));
    stop.cancel();
    task.await.unwrap();
    assert_eq!(store.cursor(CURSOR).unwrap(), 0);

    let up = FakeSink::default();
    let stop = CancellationToken::new();
    let (_, task) = spawn(&store, &up, &stop);
    until(|| up.with(|s| lines_in(&s.accepted)) == 2).await;
    stop.cancel();
    task.await.unwrap();
}
