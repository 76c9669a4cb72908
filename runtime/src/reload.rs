//! `PROGRAM reload`: a reload that reports whether it worked.
//!
//! A `SIGHUP` cannot answer, so `systemctl reload` used to return 0 and
//! systemd logged "Reloaded" while the daemon had refused the new config.
//! The units' `ExecReload=` runs `PROGRAM reload --pid $MAINPID` instead:
//! it loads the new config and every file it names exactly as the daemon
//! will (same user, same sandbox, same code), refuses before signalling if
//! that fails, then sends `SIGHUP` and waits for the daemon's own outcome,
//! which the daemon writes after every reload to `STATE_DIR/reload-status`
//! (`PID GENERATION ok` or `PID GENERATION failed REASON`). The exit status
//! is the outcome, so `systemctl reload` fails visibly and `systemctl
//! status` shows the reason in the helper's output.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File name of the outcome record in the state directory.
pub const STATUS_FILE: &str = "reload-status";

/// How long the helper waits for the daemon to answer a `SIGHUP`.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// One outcome record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pid: i32,
    pub generation: u64,
    /// `None` when the reload worked, else why it did not.
    pub failure: Option<String>,
}

impl Record {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim_end_matches('\n').splitn(4, ' ');
        let pid = parts.next()?.parse().ok()?;
        let generation = parts.next()?.parse().ok()?;
        let failure = match parts.next()? {
            "ok" => None,
            "failed" => Some(parts.next().unwrap_or("").to_owned()),
            _ => return None,
        };
        Some(Self {
            pid,
            generation,
            failure,
        })
    }

    fn line(&self) -> String {
        match &self.failure {
            None => format!("{} {} ok\n", self.pid, self.generation),
            // One line: a reason with newlines would break the record.
            Some(why) => format!(
                "{} {} failed {}\n",
                self.pid,
                self.generation,
                why.replace('\n', " ")
            ),
        }
    }
}

/// The daemon's side: records the outcome of each reload.
#[derive(Debug)]
pub struct Reporter {
    path: PathBuf,
    pid: i32,
    generation: u64,
}

impl Reporter {
    /// Starts the record for this process at generation 0 in `state_dir`.
    pub fn start(state_dir: &Path) -> Self {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let me = Self {
            path: state_dir.join(STATUS_FILE),
            pid,
            generation: 0,
        };
        me.write(None);
        me
    }

    /// Records the outcome of the reload just done.
    pub fn report(&mut self, outcome: Result<(), String>) {
        self.generation += 1;
        self.write(outcome.err());
    }

    fn write(&self, failure: Option<String>) {
        let record = Record {
            pid: self.pid,
            generation: self.generation,
            failure,
        };
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(record.line().as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "cannot record the reload outcome; `reload` will time out waiting for it"
            );
        }
    }
}

/// Why `PROGRAM reload` did not reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "no running daemon recorded in {0} (not started, or another state-dir); give --pid or \
         start it"
    )]
    NoDaemon(PathBuf),
    #[error("cannot signal process {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
    #[error(
        "process {pid} did not answer the reload within {}s (see its log)",
        .timeout.as_secs()
    )]
    Timeout { pid: i32, timeout: Duration },
    #[error("process {pid} refused the new configuration and keeps the running one: {reason}")]
    Refused { pid: i32, reason: String },
}

fn read_record(path: &Path) -> Option<Record> {
    Record::parse(&std::fs::read_to_string(path).ok()?)
}

/// Sends `SIGHUP` to the daemon (`pid`, or the one recorded in
/// `state_dir`) and waits up to `timeout` for its outcome.
pub fn request(state_dir: &Path, pid: Option<i32>, timeout: Duration) -> Result<(), ReloadError> {
    let path = state_dir.join(STATUS_FILE);
    let before = read_record(&path);
    let pid = match (pid, &before) {
        (Some(pid), _) => pid,
        (None, Some(r)) => r.pid,
        (None, None) => return Err(ReloadError::NoDaemon(path)),
    };
    // Only a newer record of the same process answers this signal.
    let baseline = before.filter(|r| r.pid == pid).map_or(0, |r| r.generation);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|source| ReloadError::Signal { pid, source })?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = read_record(&path).filter(|r| r.pid == pid && r.generation > baseline) {
            return match r.failure {
                None => Ok(()),
                Some(reason) => Err(ReloadError::Refused { pid, reason }),
            };
        }
        if Instant::now() >= deadline {
            return Err(ReloadError::Timeout { pid, timeout });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reasons_stay_on_one_line() {
        for r in [
            Record {
                pid: 42,
                generation: 0,
                failure: None,
            },
            Record {
                pid: 7,
                generation: 3,
                failure: Some("a.toml:3:1: key `x`: bad".into()),
            },
        ] {
            assert_eq!(Record::parse(&r.line()), Some(r));
        }
        let multi = Record {
            pid: 1,
            generation: 1,
            failure: Some("one\ntwo".into()),
        };
        assert_eq!(
            Record::parse(&multi.line()).unwrap().failure.as_deref(),
            Some("one two")
        );
        assert_eq!(Record::parse("garbage"), None);
    }

    #[test]
    fn a_reload_request_waits_for_the_outcome_of_its_own_signal() {
        use tokio::runtime::Builder;
        // This process plays the daemon: a SIGHUP handler that records a
        // refusal, then an acceptance.
        let dir = tempfile::tempdir().unwrap();
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        let mut hup = rt
            .block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            })
            .unwrap();
        let mut reporter = Reporter::start(dir.path());
        let state = dir.path().to_owned();
        let daemon = std::thread::spawn(move || {
            rt.block_on(async {
                hup.recv().await;
                reporter.report(Err("tls.key: mismatch".into()));
                hup.recv().await;
                reporter.report(Ok(()));
            });
        });
        let pid = i32::try_from(std::process::id()).unwrap();
        let e = request(&state, None, Duration::from_secs(20)).unwrap_err();
        assert!(
            matches!(&e, ReloadError::Refused { reason, .. } if reason == "tls.key: mismatch"),
            "{e}"
        );
        request(&state, Some(pid), Duration::from_secs(20)).unwrap();
        daemon.join().unwrap();
        // Nobody answers now: a bounded wait, then a timeout naming the pid.
        let e = request(&state, Some(pid), Duration::from_millis(200)).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("process {pid} did not answer")),
            "{e}"
        );
    }
}
