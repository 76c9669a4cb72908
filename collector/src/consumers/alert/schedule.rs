//! When a route may notify: `always`, business hours (days, start, end in
//! an IANA time zone) or a cron-like expression of open minutes.
//!
//! Times are evaluated in the schedule's zone with the tz database
//! compiled in (`chrono-tz`), so a DST change moves the window with the
//! wall clock: "09:00 Europe/Paris" is 08:00 UTC in winter and 07:00 UTC
//! in summer. Outside the window notifications are deferred (see
//! `dispatch.rs`); [`Schedule::next_change`] says when to look again.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::cron::Cron;

/// `[[alerting.schedule]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScheduleConfig {
    pub name: String,
    /// IANA zone, e.g. `Europe/Paris` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Business hours: days (`mon`, `mon-fri`), and `start`/`end` as
    /// `HH:MM` local time (`end` before `start` runs past midnight).
    #[serde(default)]
    pub days: Option<Vec<String>>,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    /// Or: open during every minute this expression matches.
    #[serde(default)]
    pub cron: Option<String>,
}

/// A usable schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Always,
    Hours {
        tz: Tz,
        /// Bit n = day n from Sunday.
        days: u8,
        /// Minutes after local midnight.
        start: u32,
        end: u32,
    },
    Cron {
        tz: Tz,
        cron: Cron,
    },
}

/// How far ahead [`Schedule::next_change`] looks (a schedule that never
/// opens is re-checked after this).
const HORIZON_MIN: i64 = 8 * 24 * 60;
const MINUTE_MS: i64 = 60_000;

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Builds a schedule; the error is `(key, message)` for the config's
    /// <file:line:key> report.
    pub fn from_config(c: &ScheduleConfig) -> Result<Self, (&'static str, String)> {
        let tz: Tz = match &c.timezone {
            None => Tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                (
                    "timezone",
                    format!("{name:?} is not an IANA time zone (e.g. \"Europe/Paris\", \"UTC\")"),
                )
            })?,
        };
        let hours = c.days.is_some() || c.start.is_some() || c.end.is_some();
        match (&c.cron, hours) {
            (Some(_), true) => Err((
                "cron",
                "give either cron or days/start/end, not both".to_owned(),
            )),
            (Some(expr), false) => {
                let cron = Cron::parse(expr).map_err(|e| ("cron", e))?;
                if !cron.ever_matches() {
                    return Err((
                        "cron",
                        format!(
                            "{expr:?} matches no date (such as 31 February): it would never open"
                        ),
                    ));
                }
                Ok(Schedule::Cron { tz, cron })
            }
            (None, false) => Err((
                "days",
                "a schedule needs days, start and end, or cron".to_owned(),
            )),
            (None, true) => {
                let (Some(start), Some(end)) = (&c.start, &c.end) else {
                    return Err(("start", "business hours need both start and end".to_owned()));
                };
                let start = clock_time(start).map_err(|e| ("start", e))?;
                let end = clock_time(end).map_err(|e| ("end", e))?;
                if start == end {
                    return Err(("end", "must differ from start".to_owned()));
                }
                let days = match &c.days {
                    None => 0x7f,
                    Some(d) if d.is_empty() => {
                        return Err((
                            "days",
                            "an empty list never opens: list days (\"mon-fri\") or leave days \
                             out for every day"
                                .to_owned(),
                        ));
                    }
                    Some(d) => day_set(d).map_err(|e| ("days", e))?,
                };
                Ok(Schedule::Hours {
                    tz,
                    days,
                    start,
                    end,
                })
            }
        }
    }

    /// Whether notifications may go out at `ms` (Unix milliseconds).
    pub fn is_open(&self, ms: i64) -> bool {
        let Some(utc) = DateTime::<Utc>::from_timestamp_millis(ms) else {
            return true;
        };
        match self {
            Schedule::Always => true,
            Schedule::Cron { tz, cron } => cron.matches(&utc.with_timezone(tz)),
            Schedule::Hours {
                tz,
                days,
                start,
                end,
            } => {
                let local = utc.with_timezone(tz);
                let minute = local.hour() * 60 + local.minute();
                let day = local.weekday().num_days_from_sunday();
                let on = |d: u32| days & (1 << (d % 7)) != 0;
                if start < end {
                    on(day) && (*start..*end).contains(&minute)
                } else {
                    // Past midnight: the evening of a listed day, or the
                    // early morning after one.
                    (on(day) && minute >= *start) || (on(day + 6) && minute < *end)
                }
            }
        }
    }

    /// The first minute boundary after `ms` at which [`Self::is_open`]
    /// differs from now; `None` for `always`. A schedule that does not
    /// change within 8 days answers the horizon.
    pub fn next_change(&self, ms: i64) -> Option<i64> {
        if *self == Schedule::Always {
            return None;
        }
        let now = self.is_open(ms);
        let first = (ms.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
        (0..HORIZON_MIN)
            .map(|i| first + i * MINUTE_MS)
            .find(|t| self.is_open(*t) != now)
            .or(Some(first + HORIZON_MIN * MINUTE_MS))
    }
}

impl Schedule {
    /// Since when the schedule has been open without a break until
    /// `now_ms`, but not before `from_ms`: `from_ms` when it was open
    /// then and ever since, else its last opening. Meant for a moment it
    /// is open; looks back at most 8 days.
    pub fn open_since(&self, from_ms: i64, now_ms: i64) -> i64 {
        if *self == Schedule::Always || from_ms >= now_ms {
            return from_ms;
        }
        let mut t = from_ms.max(now_ms - HORIZON_MIN * MINUTE_MS);
        let mut open = self.is_open(t);
        let mut opened = if open { t } else { now_ms };
        while let Some(change) = self.next_change(t).filter(|c| *c <= now_ms) {
            let now_open = self.is_open(change);
            if now_open && !open {
                opened = change;
            }
            open = now_open;
            t = change;
        }
        opened
    }
}

/// `HH:MM` → minutes after midnight (`24:00` is the end of the day).
fn clock_time(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time of day HH:MM (00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) || s.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `["mon-fri", "sun"]` → bit set from Sunday.
fn day_set(days: &[String]) -> Result<u8, String> {
    let index = |d: &str| {
        let lower = d.trim().to_ascii_lowercase();
        DAY_NAMES
            .iter()
            .position(|n| lower.starts_with(n) && lower.len() >= 3)
            .ok_or_else(|| format!("{d:?} is not a day (mon, tue, …, sun, or a range mon-fri)"))
    };
    let mut set = 0u8;
    for d in days {
        match d.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (index(a)?, index(b)?);
                // Ranges may wrap: fri-mon.
                let mut i = a;
                loop {
                    set |= 1 << i;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => set |= 1 << index(d)?,
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    fn hours(tz: &str, days: &[&str], start: &str, end: &str) -> Schedule {
        Schedule::from_config(&ScheduleConfig {
            name: "s".into(),
            timezone: Some(tz.into()),
            days: Some(days.iter().map(|d| (*d).to_owned()).collect()),
            start: Some(start.into()),
            end: Some(end.into()),
            cron: None,
        })
        .unwrap()
    }

    #[test]
    fn business_hours_follow_dst() {
        let s = hours("Europe/Paris", &["mon-fri"], "09:00", "18:00");
        // Summer (UTC+2): opens 07:00 UTC.
        assert!(!s.is_open(ms("2026-10-23T06:59:00Z")));
        assert!(s.is_open(ms("2026-10-23T07:00:00Z")));
        // Friday 18:00 Paris closes; the weekend stays closed; DST ends on
        // Sunday 2026-10-25, so Monday opens at 08:00 UTC.
        assert_eq!(
            s.next_change(ms("2026-10-23T15:30:00Z")),
            Some(ms("2026-10-23T16:00:00Z"))
        );
        assert!(!s.is_open(ms("2026-10-23T16:00:00Z")));
        assert_eq!(
            s.next_change(ms("2026-10-23T20:00:00Z")),
            Some(ms("2026-10-26T08:00:00Z"))
        );
        assert!(!s.is_open(ms("2026-10-26T07:59:59Z")));
        assert!(s.is_open(ms("2026-10-26T08:00:00Z")));
        assert_eq!(
            s.next_change(ms("2026-10-26T08:00:00Z")),
            Some(ms("2026-10-26T17:00:00Z"))
        );
    }

    #[test]
    fn overnight_window_and_wrapping_days() {
        let s = hours("UTC", &["fri-sat"], "22:00", "06:00");
        // Friday 23:00 and Saturday 05:59 (the morning after Friday) open.
        assert!(s.is_open(ms("2026-11-20T23:00:00Z")));
        assert!(s.is_open(ms("2026-11-21T05:59:00Z")));
        assert!(!s.is_open(ms("2026-11-21T06:00:00Z")));
        // Sunday morning after Saturday night: open; Monday morning: not.
        assert!(s.is_open(ms("2026-11-22T01:00:00Z")));
        assert!(!s.is_open(ms("2026-11-23T01:00:00Z")));
        assert!(!s.is_open(ms("2026-11-19T23:00:00Z")));
    }

    #[test]
    fn cron_schedule_in_a_zone() {
        let s = Schedule::from_config(&ScheduleConfig {
            name: "c".into(),
            timezone: Some("America/New_York".into()),
            days: None,
            start: None,
            end: None,
            cron: Some("* 9-16 * * 1-5".into()),
        })
        .unwrap();
        // 2026-11-20 (Friday) 09:00 EST = 14:00 UTC.
        assert!(!s.is_open(ms("2026-11-20T13:59:00Z")));
        assert!(s.is_open(ms("2026-11-20T14:00:00Z")));
        assert_eq!(
            s.next_change(ms("2026-11-20T14:00:00Z")),
            Some(ms("2026-11-20T22:00:00Z"))
        );
        assert_eq!(Schedule::Always.next_change(0), None);
        assert!(Schedule::Always.is_open(0));
    }

    #[test]
    fn mistakes_name_the_key() {
        let base = ScheduleConfig {
            name: "x".into(),
            timezone: None,
            days: Some(vec!["mon".into()]),
            start: Some("09:00".into()),
            end: Some("17:00".into()),
            cron: None,
        };
        let err = |f: &dyn Fn(&mut ScheduleConfig)| {
            let mut c = base.clone();
            f(&mut c);
            Schedule::from_config(&c).unwrap_err()
        };
        assert_eq!(
            err(&|c| c.timezone = Some("Mars/Olympus".into())).0,
            "timezone"
        );
        assert_eq!(err(&|c| c.start = Some("9am".into())).0, "start");
        // Schedules that would never open.
        let (key, why) = err(&|c| c.days = Some(vec![]));
        assert_eq!(key, "days");
        assert!(why.contains("never opens"), "{why}");
        let (key, why) = err(&|c| {
            (c.days, c.start, c.end) = (None, None, None);
            c.cron = Some("0 0 31 2 *".into());
        });
        assert_eq!(key, "cron");
        assert!(why.contains("never open"), "{why}");
        // 29 February does come round.
        let mut leap = base.clone();
        (leap.days, leap.start, leap.end) = (None, None, None);
        leap.cron = Some("0 0 29 2 *".into());
        assert!(Schedule::from_config(&leap).is_ok());
        assert_eq!(err(&|c| c.end = Some("25:00".into())).0, "end");
        assert_eq!(err(&|c| c.days = Some(vec!["someday".into()])).0, "days");
        assert_eq!(err(&|c| c.cron = Some("* * * * *".into())).0, "cron");
        assert_eq!(err(&|c| c.end = c.start.clone()).0, "end");
        let e = err(&|c| c.timezone = Some("Mars/Olympus".into())).1;
        assert!(
            e.contains("\"Mars/Olympus\" is not an IANA time zone"),
            "{e}"
        );
    }
}
