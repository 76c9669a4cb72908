//! Cron-like time windows: a five-field expression (`minute hour
//! day-of-month month day-of-week`) read as the set of minutes during
//! which a schedule is open, e.g. `* 9-17 * * mon-fri`.
//!
//! Each field takes `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`,
//! and comma-separated lists of those; months and weekdays also by name
//! (`jan`, `mon`; Sunday is 0 or 7). As in cron, when both day-of-month
//! and day-of-week are restricted a day matching either is enough.

use chrono::{Datelike, Timelike};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether day-of-month / day-of-week were given (not `*`).
    days_restricted: bool,
    weekdays_restricted: bool,
    /// Whether the minute or the hour field starts with `*` (`*`, `*/5`):
    /// what Debian's cron calls a wildcard job, run by the clock through a
    /// daylight-saving change (`checks/timing.rs`).
    wildcard: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses `expr`; the error names the field and what is wrong with it.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "{expr:?}: needs 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        };
        let weekdays = field("day-of-week", weekday, 0, 7, &WEEKDAYS, 0)?;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Self {
            minutes: field("minute", minute, 0, 59, &[], 0)?,
            hours: field("hour", hour, 0, 23, &[], 0)?,
            days: field("day-of-month", day, 1, 31, &[], 0)?,
            months: field("month", month, 1, 12, &MONTHS, 1)?,
            weekdays,
            days_restricted: day != "*",
            weekdays_restricted: weekday != "*",
            wildcard: minute.starts_with('*') || hour.starts_with('*'),
        })
    }

    /// Whether any minute of any date matches (`0 0 31 2 *` never does).
    /// Dates repeat with weekdays every 28 years in 2000–2099, so one such
    /// cycle of days decides.
    pub fn ever_matches(&self) -> bool {
        let (Some(h), Some(m)) = (lowest(self.hours), lowest(self.minutes)) else {
            return false;
        };
        let Some(start) = chrono::NaiveDate::from_ymd_opt(2000, 1, 1) else {
            return false;
        };
        start
            .iter_days()
            .take(28 * 366)
            .filter_map(|d| d.and_hms_opt(h, m, 0))
            .any(|t| self.matches(&t))
    }

    /// Whether the minute containing `t` (local time) matches.
    pub fn matches<T: Datelike + Timelike>(&self, t: &T) -> bool {
        let bit = |set: u64, v: u32| set & (1 << v) != 0;
        bit(self.minutes, t.minute()) && bit(self.hours, t.hour()) && self.day_matches(t)
    }

    /// Whether some minute of the day of `t` (local date) may match.
    pub fn day_matches<T: Datelike>(&self, t: &T) -> bool {
        let bit = |set: u64, v: u32| set & (1 << v) != 0;
        let dom = bit(self.days, t.day());
        let dow = bit(self.weekdays, t.weekday().num_days_from_sunday());
        let day = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        };
        bit(self.months, t.month()) && day
    }

    /// A fixed-time expression (neither the minute nor the hour field
    /// starts with `*`): run once per matching wall time.
    pub fn fixed_time(&self) -> bool {
        !self.wildcard
    }
}

/// The lowest value in a bit set.
fn lowest(set: u64) -> Option<u32> {
    (set != 0).then(|| set.trailing_zeros())
}

/// Parses one field into a bit set of the values it allows.
fn field(
    name: &str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    first_name: u32,
) -> Result<u64, String> {
    let bad = |why: String| format!("{name} field {text:?}: {why}");
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(u32::try_from(i).unwrap_or(0) + first_name);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a number{}", hint(names))))?;
        if !(min..=max).contains(&v) {
            return Err(bad(format!("{v} is outside {min}-{max}")));
        }
        Ok(v)
    };
    let mut set = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(format!("step {s:?} must be a positive number")))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(bad(format!("range {range:?} runs backwards")));
            }
            (a, b)
        } else if part.contains('/') {
            // `5/15`: from 5 to the end, every 15.
            (value(range)?, max)
        } else {
            let v = value(range)?;
            (v, v)
        };
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn hint(names: &[&str]) -> String {
    match (names.first(), names.last()) {
        (Some(a), Some(b)) => format!(" or a name {a}..{b}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    }

    #[test]
    fn office_hours_expression() {
        let c = Cron::parse("* 9-17 * * mon-fri").unwrap();
        // 2026-11-20 is a Friday, 2026-11-21 a Saturday.
        assert!(c.matches(&at(2026, 11, 20, 9, 0)));
        assert!(c.matches(&at(2026, 11, 20, 17, 59)));
        assert!(!c.matches(&at(2026, 11, 20, 18, 0)));
        assert!(!c.matches(&at(2026, 11, 20, 8, 59)));
        assert!(!c.matches(&at(2026, 11, 21, 10, 0)));
    }

    #[test]
    fn steps_lists_names_and_sunday_as_7() {
        let c = Cron::parse("*/15 0,12 1 JAN,jul 7").unwrap();
        assert!(c.matches(&at(2026, 1, 1, 12, 30)));
        assert!(!c.matches(&at(2026, 1, 1, 12, 31)));
        assert!(!c.matches(&at(2026, 2, 1, 0, 0)));
        // Both day fields restricted: the 1st OR a Sunday (2026-07-05).
        assert!(c.matches(&at(2026, 7, 5, 0, 45)));
        assert!(!c.matches(&at(2026, 7, 6, 0, 45)));
        let c = Cron::parse("5/20 * * * *").unwrap();
        assert!(c.matches(&at(2026, 7, 6, 3, 45)) && !c.matches(&at(2026, 7, 6, 3, 40)));
    }

    #[test]
    fn mistakes_are_named() {
        let e = |s| Cron::parse(s).unwrap_err();
        assert!(e("* * *").contains("needs 5 fields"), "{}", e("* * *"));
        assert!(e("60 * * * *").contains("minute field \"60\": 60 is outside 0-59"));
        assert!(e("* 5-2 * * *").contains("hour field \"5-2\": range \"5-2\" runs backwards"));
        assert!(e("* * * * funday").contains("day-of-week field"));
        assert!(e("* * * * funday").contains("or a name sun..sat"));
        assert!(e("*/0 * * * *").contains("step \"0\" must be a positive number"));
    }
}
