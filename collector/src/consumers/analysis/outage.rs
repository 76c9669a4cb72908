//! Outage detection on one series, with hysteresis.
//!
//! An outage **starts** when at least `n` of the last `m` probes failed
//! (defaults 3 of 3). Its start time is the send time of the earliest
//! failed probe among those `m`, and the probes lost so far are the
//! failures among them. It **ends** after `k` consecutive answered probes
//! (default 2); its end time is the send time of the first of those. Every
//! failure while it is open counts as lost. Probes are taken in the order
//! the agent sent them.

use std::collections::VecDeque;

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// Failures among the last `of` probes that start an outage.
    #[serde(default = "three")]
    pub failures: u32,
    #[serde(default = "three")]
    pub of: u32,
    /// Consecutive answered probes that end it.
    #[serde(default = "two")]
    pub recover_after: u32,
}

fn three() -> u32 {
    3
}
fn two() -> u32 {
    2
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            failures: 3,
            of: 3,
            recover_after: 2,
        }
    }
}

/// Largest window (`of`) accepted.
pub const MAX_WINDOW: u32 = 64;

/// An outage as the detector reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outage {
    pub start_ns: i64,
    /// `None` while open.
    pub end_ns: Option<i64>,
    pub lost: u64,
}

/// What one probe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Started(Outage),
    Ended(Outage),
}

/// Detector state for one series.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    /// The last `of` probes: (send time, failed).
    window: VecDeque<(i64, bool)>,
    /// Consecutive answered probes since the last failure, with the time
    /// of the first of them.
    streak: u32,
    streak_start: i64,
    open: Option<Outage>,
}

impl Detector {
    /// A detector that continues an outage open before a restart.
    pub fn resume(open: Option<Outage>) -> Self {
        Self {
            open,
            ..Self::default()
        }
    }

    pub fn open(&self) -> Option<&Outage> {
        self.open.as_ref()
    }

    /// Ends an open outage at `end_ns` (not before its start) because the
    /// series is no longer probed; gives it as ended.
    pub fn end(&mut self, end_ns: i64) -> Option<Outage> {
        let mut ended = self.open.take()?;
        ended.end_ns = Some(end_ns.max(ended.start_ns));
        self.window.clear();
        self.streak = 0;
        Some(ended)
    }

    /// Feeds one probe.
    pub fn observe(&mut self, policy: &Policy, time_ns: i64, ok: bool) -> Option<Change> {
        let m = policy.of.clamp(1, MAX_WINDOW) as usize;
        self.window.push_back((time_ns, !ok));
        while self.window.len() > m {
            self.window.pop_front();
        }
        if ok {
            if self.streak == 0 {
                self.streak_start = time_ns;
            }
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        #[allow(clippy::single_match_else)]
        match &mut self.open {
            Some(open) => {
                if !ok {
                    open.lost += 1;
                    None
                } else if self.streak >= policy.recover_after.max(1) {
                    let mut ended = *open;
                    ended.end_ns = Some(self.streak_start);
                    self.open = None;
                    // The probes that ended it do not count towards the
                    // next one.
                    self.window.clear();
                    Some(Change::Ended(ended))
                } else {
                    None
                }
            }
            None => {
                let failed = self.window.iter().filter(|(_, f)| *f).count();
                if failed >= policy.failures.max(1) as usize {
                    let start = self
                        .window
                        .iter()
                        .find(|(_, f)| *f)
                        .map_or(time_ns, |(t, _)| *t);
                    let outage = Outage {
                        start_ns: start,
                        end_ns: None,
                        lost: failed as u64,
                    };
                    self.open = Some(outage);
                    Some(Change::Started(outage))
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pattern` ('.' answered, 'x' lost) at 1 s intervals from t=1 s.
    fn run(policy: Policy, pattern: &str) -> Vec<(usize, Change)> {
        let mut d = Detector::default();
        pattern
            .chars()
            .enumerate()
            .filter_map(|(i, c)| {
                let t = i64::try_from(i + 1).unwrap() * 1_000_000_000;
                d.observe(&policy, t, c == '.').map(|ch| (i, ch))
            })
            .collect()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn three_of_three_then_two_to_recover() {
        let p = Policy::default();
        // Two failures are not an outage; a third in a row is.
        let got = run(p, "..xx.xxx.x..");
        assert_eq!(
            got,
            vec![
                (
                    7,
                    Change::Started(Outage {
                        start_ns: 6 * S,
                        end_ns: None,
                        lost: 3
                    })
                ),
                (
                    11,
                    Change::Ended(Outage {
                        start_ns: 6 * S,
                        end_ns: Some(11 * S),
                        lost: 4
                    })
                ),
            ]
        );
    }

    #[test]
    fn n_of_m_counts_scattered_failures() {
        let p = Policy {
            failures: 3,
            of: 5,
            recover_after: 3,
        };
        // x.x.x: three of the last five → starts at the first of them.
        let got = run(p, "..x.x.x....");
        assert_eq!(
            got,
            vec![
                (
                    6,
                    Change::Started(Outage {
                        start_ns: 3 * S,
                        end_ns: None,
                        lost: 3
                    })
                ),
                (
                    9,
                    Change::Ended(Outage {
                        start_ns: 3 * S,
                        end_ns: Some(8 * S),
                        lost: 3
                    })
                ),
            ]
        );
        // A resumed outage ends without needing a start.
        let mut d = Detector::resume(Some(Outage {
            start_ns: 1,
            end_ns: None,
            lost: 9,
        }));
        assert_eq!(d.observe(&p, 10, false), None);
        assert_eq!(d.observe(&p, 11, true), None);
        assert_eq!(d.observe(&p, 12, true), None);
        assert_eq!(
            d.observe(&p, 13, true),
            Some(Change::Ended(Outage {
                start_ns: 1,
                end_ns: Some(11),
                lost: 10
            }))
        );
    }
}
