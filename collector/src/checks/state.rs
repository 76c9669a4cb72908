//! What a check is at a given moment, from what it expects (`timing.rs`,
//! its grace, its monitoring schedule) and what it has received. Pure:
//! the caller brings the time, so every rule is tested without a clock.
//!
//! As in Healthchecks: a check is **new** until its first ping and
//! **paused** while paused (neither has a deadline); after a success it
//! is **up** until the next ping is due, **late** from then for `grace`,
//! and **down** after that, until a success again. A run announced with
//! `/start` must end (with a success or a failure) within `grace` of its
//! start. A failure (`/fail`, an exit status 1–255) makes it down at once.
//!
//! A check with a monitoring schedule (`[[alerting.schedule]]`) that is
//! silent (its next ping overdue) while the schedule is closed is
//! **off-hours**, unless it is already down (it stays down); one that is
//! not overdue is up, as inside the window. It is never late or down for a silence outside its
//! window: when the window opens, a ping that fell due while it was closed
//! is due at the opening, and the grace runs from there (office hours
//! 09:00–18:00, a check silent since the evening: late at 09:00, down at
//! 09:00 + grace).

use crate::consumers::alert::schedule::Schedule;

use super::timing::Timing;

/// What a check expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub timing: Timing,
    pub grace_ms: i64,
    /// When it is watched; `None`: always.
    pub schedule: Option<Schedule>,
}

/// The state a check keeps between pings (stored); `late` and
/// `off-hours` are computed from it and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stored {
    New,
    Up,
    Down,
    Paused,
}

/// What a check has received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub stored: Stored,
    /// The last success (Unix ms).
    pub last_success_ms: Option<i64>,
    /// A run started (`/start`) and not ended yet.
    pub started_ms: Option<i64>,
}

/// What a check is at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    New,
    Up,
    Late,
    Down,
    Paused,
    OffHours,
}

/// A check's state at a moment, and the next moment it changes without a
/// ping (`None`: not before a ping or a change of the check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    pub until_ms: Option<i64>,
    /// When it is (or was) expected next: the deadline the UI shows.
    pub expected_ms: Option<i64>,
}

impl Expectation {
    /// The state at `now_ms`.
    pub fn judge(&self, r: &Received, now_ms: i64) -> Verdict {
        let still = |state| Verdict {
            state,
            until_ms: None,
            expected_ms: None,
        };
        let last = match (r.stored, r.last_success_ms) {
            (Stored::New, _) => return still(State::New),
            (Stored::Paused, _) => return still(State::Paused),
            (Stored::Down, _) => return still(State::Down),
            (Stored::Up, None) => return still(State::Up),
            (Stored::Up, Some(last)) => last,
        };
        // Due: the next expected ping, or the end of a started run's grace
        // window, whichever comes first.
        let due = self.timing.due_after(last);
        let due = match (due, r.started_ms) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        let Some(mut due) = due else {
            return still(State::Up);
        };
        let mut closes = None;
        if let Some(schedule) = &self.schedule {
            if !schedule.is_open(now_ms) {
                if now_ms < due {
                    // Not silent yet: up until due (or until the window
                    // opens, whichever is first).
                    let opens = schedule.next_change(now_ms);
                    return Verdict {
                        state: State::Up,
                        until_ms: Some(opens.map_or(due, |o| o.min(due))),
                        expected_ms: Some(due),
                    };
                }
                return Verdict {
                    state: State::OffHours,
                    until_ms: schedule.next_change(now_ms),
                    expected_ms: Some(due),
                };
            }
            due = due.max(schedule.open_since(due, now_ms));
            closes = schedule.next_change(now_ms);
        }
        let down_at = due.saturating_add(self.grace_ms);
        let (state, next) = if now_ms >= down_at {
            (State::Down, None)
        } else if now_ms >= due {
            (State::Late, Some(down_at))
        } else {
            (State::Up, Some(due))
        };
        let until_ms = match (next, closes) {
            (Some(n), Some(c)) => Some(n.min(c)),
            (n, c) => n.or(c).filter(|_| state != State::Down),
        };
        Verdict {
            state,
            until_ms,
            expected_ms: Some(due),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::consumers::alert::cron::Cron;
    use crate::consumers::alert::schedule::ScheduleConfig;

    const MIN: i64 = 60_000;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis()
    }

    fn up(last: i64) -> Received {
        Received {
            stored: Stored::Up,
            last_success_ms: Some(last),
            started_ms: None,
        }
    }

    fn simple(period_min: i64, grace_min: i64) -> Expectation {
        Expectation {
            timing: Timing::Simple {
                period_ms: period_min * MIN,
            },
            grace_ms: grace_min * MIN,
            schedule: None,
        }
    }

    fn states(e: &Expectation, r: &Received, times: &[i64]) -> Vec<State> {
        times.iter().map(|t| e.judge(r, *t).state).collect()
    }

    #[test]
    fn a_simple_check_is_late_after_its_period_and_down_after_the_grace() {
        let e = simple(10, 5);
        let t = utc(2026, 12, 7, 12, 0);
        let r = up(t);
        assert_eq!(
            states(
                &e,
                &r,
                &[
                    t,
                    t + 10 * MIN - 1,
                    t + 10 * MIN,
                    t + 15 * MIN - 1,
                    t + 15 * MIN
                ]
            ),
            [State::Up, State::Up, State::Late, State::Late, State::Down]
        );
        // Each verdict says when it changes next.
        assert_eq!(e.judge(&r, t).until_ms, Some(t + 10 * MIN));
        assert_eq!(e.judge(&r, t + 11 * MIN).until_ms, Some(t + 15 * MIN));
        assert_eq!(e.judge(&r, t + 15 * MIN).until_ms, None);
        // New, paused and down have no deadline.
        for stored in [Stored::New, Stored::Paused, Stored::Down] {
            let v = e.judge(&Received { stored, ..r }, t + 60 * MIN);
            assert_eq!(v.until_ms, None);
        }
    }

    #[test]
    fn a_started_run_must_end_within_the_grace() {
        let e = simple(60, 5);
        let t = utc(2026, 12, 7, 12, 0);
        let r = Received {
            started_ms: Some(t + 10 * MIN),
            ..up(t)
        };
        assert_eq!(
            states(&e, &r, &[t + 10 * MIN - 1, t + 10 * MIN, t + 15 * MIN]),
            [State::Up, State::Late, State::Down]
        );
    }

    #[test]
    fn a_cron_check_is_expected_at_every_tick_across_the_autumn_change() {
        let e = Expectation {
            timing: Timing::Cron {
                cron: Cron::parse("*/2 * * * *").unwrap(),
                tz: "Europe/Paris".parse().unwrap(),
            },
            grace_ms: MIN,
            schedule: None,
        };
        // Pinged at 00:58 UTC (02:58 CEST), just before the clock goes back
        // at 01:00 UTC: next tick 01:00 UTC (02:00 CET), down at 01:01.
        let last = utc(2026, 10, 25, 0, 58);
        let r = up(last);
        let v = e.judge(&r, last + 30_000);
        assert_eq!((v.state, v.expected_ms), (State::Up, Some(last + 2 * MIN)));
        assert_eq!(
            states(
                &e,
                &r,
                &[last + 2 * MIN - 1, last + 2 * MIN, last + 3 * MIN]
            ),
            [State::Up, State::Late, State::Down]
        );
    }

    fn office() -> Schedule {
        Schedule::from_config(&ScheduleConfig {
            name: "office".into(),
            timezone: Some("Europe/Paris".into()),
            days: Some(vec!["mon-fri".into()]),
            start: Some("09:00".into()),
            end: Some("18:00".into()),
            cron: None,
        })
        .unwrap()
    }

    #[test]
    fn outside_its_schedule_a_silent_check_is_off_hours_and_due_at_the_opening() {
        let e = Expectation {
            schedule: Some(office()),
            ..simple(10, 5)
        };
        // Friday 2026-10-23, 17:55 CEST (15:55 UTC): the last ping.
        let last = utc(2026, 10, 23, 15, 55);
        let r = up(last);
        // 18:00 CEST closes the office: off-hours, not late, all weekend
        // (and across the change back to CET on Sunday).
        let v = e.judge(&r, utc(2026, 10, 23, 16, 5));
        assert_eq!(v.state, State::OffHours);
        // Monday 09:00 CET = 08:00 UTC opens it again.
        assert_eq!(v.until_ms, Some(utc(2026, 10, 26, 8, 0)));
        assert_eq!(e.judge(&r, utc(2026, 10, 25, 12, 0)).state, State::OffHours);
        let monday = utc(2026, 10, 26, 8, 0);
        assert_eq!(
            states(
                &e,
                &r,
                &[monday - 1, monday, monday + 5 * MIN - 1, monday + 5 * MIN]
            ),
            [State::OffHours, State::Late, State::Late, State::Down]
        );
        // Late at the opening, so a verdict there waits for the grace.
        assert_eq!(e.judge(&r, monday).until_ms, Some(monday + 5 * MIN));
        // Up inside the window: the verdict changes at the next due time
        // or when the window closes, whichever is first.
        let r = up(utc(2026, 10, 26, 16, 55)); // 17:55 CET
        assert_eq!(
            e.judge(&r, utc(2026, 10, 26, 16, 56)).until_ms,
            Some(utc(2026, 10, 26, 17, 0))
        );
        // Pinged outside the window and not overdue yet: up until due.
        let saturday = utc(2026, 10, 24, 10, 0);
        let v = e.judge(&up(saturday), saturday + MIN);
        assert_eq!(
            (v.state, v.until_ms),
            (State::Up, Some(saturday + 10 * MIN))
        );
        assert_eq!(
            e.judge(&up(saturday), saturday + 10 * MIN).state,
            State::OffHours
        );
        // Down stays down when the window closes.
        let down = Received {
            stored: Stored::Down,
            ..r
        };
        assert_eq!(e.judge(&down, utc(2026, 10, 26, 20, 0)).state, State::Down);
    }

    #[test]
    fn a_window_over_midnight() {
        let night = Schedule::from_config(&ScheduleConfig {
            name: "night".into(),
            timezone: Some("UTC".into()),
            days: None,
            start: Some("22:00".into()),
            end: Some("06:00".into()),
            cron: None,
        })
        .unwrap();
        let e = Expectation {
            schedule: Some(night),
            ..simple(30, 10)
        };
        // Pinged 23:50; due 00:20 after midnight, inside the window.
        let last = utc(2026, 12, 7, 23, 50);
        let r = up(last);
        assert_eq!(
            states(
                &e,
                &r,
                &[
                    utc(2026, 12, 8, 0, 19),
                    utc(2026, 12, 8, 0, 20),
                    utc(2026, 12, 8, 0, 30)
                ]
            ),
            [State::Up, State::Late, State::Down]
        );
        // Pinged 05:50: due 06:20, after the window: off-hours until 22:00,
        // then late, down at 22:10.
        let r = up(utc(2026, 12, 8, 5, 50));
        assert_eq!(
            states(
                &e,
                &r,
                &[
                    utc(2026, 12, 8, 6, 20),
                    utc(2026, 12, 8, 22, 0),
                    utc(2026, 12, 8, 22, 10)
                ]
            ),
            [State::OffHours, State::Late, State::Down]
        );
    }
}
