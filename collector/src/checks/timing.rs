//! When a check expects its next ping: a *simple* check `period` after the
//! last one, a *cron* check at the next tick of its five-field expression
//! in its IANA time zone (the two kinds Healthchecks has; `state.rs` adds
//! the grace and the monitoring schedule).
//!
//! Cron ticks follow Debian's (Vixie) cron across daylight-saving changes,
//! so that a check expects exactly the runs cron makes:
//! - an expression with `*` leading its minute or hour field (`*/2 * * * *`,
//!   `15 * * * *`, `0 */2 * * *`) ticks at every real minute whose local
//!   wall time matches: through a change it keeps its rhythm in real time;
//! - a fixed-time expression (`30 2 * * *`) ticks once per matching wall
//!   time: in the hour repeated in autumn only on its first pass, and a
//!   wall time the spring change skips ticks at the first minute after
//!   the jump.

use chrono::{DateTime, MappedLocalTime, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::consumers::alert::cron::Cron;

const MINUTE_MS: i64 = 60_000;
/// How far ahead a tick is looked for: far enough for 29 February across
/// a century year that is not a leap year (2100).
const HORIZON_MS: i64 = 8 * 366 * 24 * 60 * MINUTE_MS;

/// When pings are expected.
#[derive(Debug, Clone, PartialEq)]
pub enum Timing {
    /// Every `period_ms` after the last ping.
    Simple { period_ms: i64 },
    /// At every tick of `cron` in `tz`.
    Cron { cron: Cron, tz: Tz },
}

impl Timing {
    /// When the next ping is due after one at `last_ms` (Unix ms); `None`
    /// when the expression has no tick within a year.
    pub fn due_after(&self, last_ms: i64) -> Option<i64> {
        match self {
            Timing::Simple { period_ms } => last_ms.checked_add(*period_ms),
            Timing::Cron { cron, tz } => next_tick(cron, *tz, last_ms),
        }
    }
}

/// The first tick of `cron` in `tz` strictly after `ms`, at a whole
/// minute (see the module docs for daylight-saving changes).
pub fn next_tick(cron: &Cron, tz: Tz, ms: i64) -> Option<i64> {
    let fixed = cron.fixed_time();
    let one = TimeDelta::minutes(1);
    let mut at = ms
        .div_euclid(MINUTE_MS)
        .checked_add(1)?
        .checked_mul(MINUTE_MS)?;
    let end = at.checked_add(HORIZON_MS)?;
    let mut before = wall(tz, at - MINUTE_MS)?;
    while at < end {
        let now = wall(tz, at)?;
        if !cron.day_matches(&now) {
            // Not this day: on to an hour before local midnight (a change
            // of the clock moves midnight by at most that).
            let left = 24 * 60 - i64::from(now.hour() * 60 + now.minute());
            if left > 61 {
                at += (left - 61) * MINUTE_MS;
                before = wall(tz, at - MINUTE_MS)?;
                continue;
            }
        }
        if cron.matches(&now) {
            if !(fixed && repeated(tz, at, now)) {
                return Some(at);
            }
        } else if fixed && now - before > one {
            // The clock jumped forward: a wall time it skipped runs now.
            let mut skipped = before + one;
            while skipped < now {
                if cron.matches(&skipped) {
                    return Some(at);
                }
                skipped += one;
            }
        }
        before = now;
        at += MINUTE_MS;
    }
    None
}

/// The wall-clock time in `tz` at `ms`.
fn wall(tz: Tz, ms: i64) -> Option<NaiveDateTime> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).naive_local())
}

/// Whether `wall` at instant `ms` is the second pass through a wall time
/// (the hour repeated when the clock goes back).
fn repeated(tz: Tz, ms: i64, wall: NaiveDateTime) -> bool {
    match tz.from_local_datetime(&wall) {
        MappedLocalTime::Ambiguous(first, _) => first.timestamp_millis() != ms,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis()
    }

    fn ticks(expr: &str, tz: &str, from: i64, n: usize) -> Vec<i64> {
        let cron = Cron::parse(expr).unwrap();
        let tz: Tz = tz.parse().unwrap();
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = next_tick(&cron, tz, t).unwrap();
            out.push(t);
        }
        out
    }

    #[test]
    fn a_wildcard_expression_keeps_its_rhythm_through_the_autumn_change() {
        // Paris leaves summer time on 2026-10-25 at 01:00 UTC (03:00 CEST
        // becomes 02:00 CET): every 2 real minutes before, during and after.
        let got = ticks("*/2 * * * *", "Europe/Paris", utc(2026, 10, 25, 0, 55), 6);
        let want: Vec<i64> = [56, 58, 60, 62, 64, 66]
            .iter()
            .map(|m| utc(2026, 10, 25, 0, 0) + m * MINUTE_MS)
            .collect();
        assert_eq!(got, want);
        // Hourly at :15: each real hour, the repeated one included.
        let got = ticks("15 * * * *", "Europe/Paris", utc(2026, 10, 24, 23, 30), 3);
        assert_eq!(
            got,
            vec![
                utc(2026, 10, 25, 0, 15), // 02:15 CEST
                utc(2026, 10, 25, 1, 15), // 02:15 CET
                utc(2026, 10, 25, 2, 15), // 03:15 CET
            ]
        );
    }

    #[test]
    fn a_fixed_time_runs_once_in_the_repeated_hour_and_after_the_skipped_one() {
        // 02:30 every day: once on 2026-10-25 (the first 02:30, CEST).
        let got = ticks("30 2 * * *", "Europe/Paris", utc(2026, 10, 24, 12, 0), 3);
        assert_eq!(
            got,
            vec![
                utc(2026, 10, 25, 0, 30), // 02:30 CEST
                utc(2026, 10, 26, 1, 30), // 02:30 CET, the next day
                utc(2026, 10, 27, 1, 30),
            ]
        );
        // 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00 UTC): 02:30 does
        // not exist, the run comes at 03:00 CEST.
        let got = ticks("30 2 * * *", "Europe/Paris", utc(2026, 3, 28, 12, 0), 2);
        assert_eq!(got, vec![utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]);
        // A wildcard hour skips the missing hour with the clock.
        let got = ticks("15 * * * *", "Europe/Paris", utc(2026, 3, 28, 23, 30), 2);
        assert_eq!(got, vec![utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 1, 15)]);
    }

    #[test]
    fn ticks_are_strictly_after_and_on_whole_minutes() {
        let t = utc(2026, 12, 7, 10, 0);
        assert_eq!(ticks("* * * * *", "UTC", t, 1), vec![t + MINUTE_MS]);
        assert_eq!(ticks("* * * * *", "UTC", t + 1, 1), vec![t + MINUTE_MS]);
        assert_eq!(
            ticks("0 0 29 2 *", "UTC", t, 1),
            vec![utc(2028, 2, 29, 0, 0)]
        );
        // Nothing within the horizon.
        let never = Cron::parse("0 0 30 2 *").unwrap();
        assert_eq!(next_tick(&never, Tz::UTC, t), None);
        let simple = Timing::Simple { period_ms: 90_000 };
        assert_eq!(simple.due_after(t), Some(t + 90_000));
    }
}
