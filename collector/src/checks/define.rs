//! A check's definition: what the API takes (`POST /api/v1/checks`, `PUT
//! /api/v1/checks/ID`), checked field by field so that a mistake is a
//! `400` that names the field, and what is stored (JSON in `checks.spec`).
//!
//! Like Healthchecks: a *simple* check gives `period` (default 1 day), a
//! *cron* check gives `cron` and `timezone` (default UTC); both give
//! `grace` (default 1 hour). Unlike Healthchecks, periods and graces from
//! 1 second are accepted (short jobs and tests), up to 365 days.

use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::state::Expectation;
use super::timing::Timing;
use crate::config::Config;
use crate::consumers::alert::cron::Cron;

/// Longest name.
pub const MAX_NAME: usize = 100;
/// Longest slug.
pub const MAX_SLUG: usize = 100;
/// Shortest period and grace.
pub const MIN_DURATION: Duration = Duration::from_secs(1);
/// Longest period and grace.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
const DEFAULT_PERIOD: Duration = Duration::from_secs(86_400);
const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// A definition as the API receives it (`PUT` takes the whole of it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub name: String,
    /// For `/ping/<ping-key>/<slug>`; default: made from the name.
    #[serde(default)]
    pub slug: Option<String>,
    /// Simple checks: `1d`, `10m`.
    #[serde(default)]
    pub period: Option<String>,
    /// Cron checks: five fields.
    #[serde(default)]
    pub cron: Option<String>,
    /// Cron checks: IANA zone (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub grace: Option<String>,
    /// An `[[alerting.schedule]]`: outside it the check is off-hours.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Operators only: whose check it is (default: the caller's tenant).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// What a check expects, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    #[serde(with = "humantime_serde", default)]
    pub period: Option<Duration>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    #[serde(default)]
    pub schedule: Option<String>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Spec {
    /// The expectation the monitor judges by; a schedule the config no
    /// longer has means "always" (and is logged where it is used).
    pub fn expectation(&self, config: &Config) -> Expectation {
        let timing = match (&self.cron, self.period) {
            (Some(c), _) => match Cron::parse(c) {
                Ok(cron) => Timing::Cron {
                    cron,
                    tz: self
                        .timezone
                        .as_deref()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(Tz::UTC),
                },
                // Validated when stored; a stored one that no longer parses
                // expects nothing rather than paging.
                Err(_) => Timing::Simple {
                    period_ms: i64::MAX,
                },
            },
            (None, p) => Timing::Simple {
                period_ms: millis(p.unwrap_or(DEFAULT_PERIOD)),
            },
        };
        let schedule = self
            .schedule
            .as_deref()
            .and_then(|name| config.alerting.defined_schedule(name));
        Expectation {
            timing,
            grace_ms: millis(self.grace),
            schedule,
        }
    }
}

/// The slug made from a name: lowercase ASCII letters and digits, other
/// runs of characters as one `-` (`Nightly backup (db)` →
/// `nightly-backup-db`).
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out.chars().take(MAX_SLUG).collect()
}

/// Whether `s` is a usable slug.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SLUG
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn duration(key: &str, raw: Option<&str>, default: Duration) -> Result<Duration, String> {
    let d = match raw {
        None => default,
        Some(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{key}: {s:?} is not a duration such as 10m or 1d: {e}"))?,
    };
    if !(MIN_DURATION..=MAX_DURATION).contains(&d) {
        return Err(format!("{key}: must be between 1s and 365d"));
    }
    Ok(d)
}

impl CheckRequest {
    /// Checks everything and gives the name, slug and spec; the message
    /// names the offending field.
    pub fn validate(&self, config: &Config) -> Result<(String, String, Spec), String> {
        let name = self.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME
            || name.chars().any(sonde_runtime::text::is_unsafe)
        {
            return Err(format!(
                "name: must be 1 to {MAX_NAME} characters without control or bidi-override characters"
            ));
        }
        let slug = match &self.slug {
            Some(s) if !is_slug(s) => {
                return Err(format!(
                    "slug: {s:?} must be 1 to {MAX_SLUG} of a-z, 0-9, - and _"
                ));
            }
            Some(s) => s.clone(),
            None => slugify(name),
        };
        if slug.is_empty() {
            return Err(
                "slug: the name has no letter or digit to make one from; give a slug".into(),
            );
        }
        let (period, cron, timezone) = match (&self.period, &self.cron) {
            (Some(_), Some(_)) => {
                return Err("cron: give either period (a simple check) or cron, not both".into());
            }
            (_, Some(expr)) => {
                Cron::parse(expr).map_err(|e| format!("cron: {e}"))?;
                let tz = self.timezone.clone().unwrap_or_else(|| "UTC".into());
                tz.parse::<Tz>().map_err(|_| {
                    format!(
                        "timezone: {tz:?} is not an IANA time zone (e.g. \"Europe/Paris\", \"UTC\")"
                    )
                })?;
                let timing = Timing::Cron {
                    cron: Cron::parse(expr).map_err(|e| format!("cron: {e}"))?,
                    tz: tz.parse().unwrap_or(Tz::UTC),
                };
                if timing.due_after(crate::store::now_ms()).is_none() {
                    return Err(format!("cron: {expr:?} has no time within the next years"));
                }
                (None, Some(expr.trim().to_owned()), Some(tz))
            }
            (period, None) => {
                if self.timezone.is_some() {
                    return Err("timezone: only cron checks have a time zone".into());
                }
                let p = duration("period", period.as_deref(), DEFAULT_PERIOD)?;
                (Some(p), None, None)
            }
        };
        let grace = duration("grace", self.grace.as_deref(), DEFAULT_GRACE)?;
        if let Some(s) = &self.schedule
            && !config.alerting.schedule.iter().any(|d| d.name == *s)
        {
            let known: Vec<&str> = config
                .alerting
                .schedule
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            return Err(format!(
                "schedule: no [[alerting.schedule]] named {s:?} (known: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
        Ok((
            name.to_owned(),
            slug,
            Spec {
                period,
                cron,
                timezone,
                grace,
                schedule: self.schedule.clone(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        sonde_runtime::config::Source::from_text(
            std::path::Path::new("t.toml"),
            "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
             [[alerting.schedule]]\nname = \"office\"\ntimezone = \"Europe/Paris\"\n\
             days = [\"mon-fri\"]\nstart = \"09:00\"\nend = \"18:00\"\n"
                .to_owned(),
        )
        .parse()
        .unwrap()
    }

    fn req(f: impl FnOnce(&mut CheckRequest)) -> Result<(String, String, Spec), String> {
        let mut r = CheckRequest {
            name: "Nightly backup (db)".into(),
            ..CheckRequest::default()
        };
        f(&mut r);
        r.validate(&config())
    }

    #[test]
    fn defaults_are_healthchecks_and_the_slug_comes_from_the_name() {
        let (name, slug, spec) = req(|_| {}).unwrap();
        assert_eq!(name, "Nightly backup (db)");
        assert_eq!(slug, "nightly-backup-db");
        assert_eq!(spec.period, Some(DEFAULT_PERIOD));
        assert_eq!(spec.grace, DEFAULT_GRACE);
        let (_, _, spec) = req(|r| {
            r.cron = Some("*/2 * * * *".into());
            r.timezone = Some("Europe/Paris".into());
            r.grace = Some("30s".into());
            r.schedule = Some("office".into());
        })
        .unwrap();
        assert_eq!(spec.period, None);
        assert_eq!(spec.timezone.as_deref(), Some("Europe/Paris"));
        let e = spec.expectation(&config());
        assert!(matches!(
            e.timing,
            Timing::Cron {
                tz: Tz::Europe__Paris,
                ..
            }
        ));
        assert_eq!(e.grace_ms, 30_000);
        assert!(e.schedule.is_some());
    }

    #[test]
    fn each_mistake_is_named_by_its_field() {
        type Edit = Box<dyn FnOnce(&mut CheckRequest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|r| r.name = " ".into()), "name:"),
            (Box::new(|r| r.name = "a\u{202e}b".into()), "name:"),
            (Box::new(|r| r.slug = Some("Has Space".into())), "slug:"),
            (Box::new(|r| r.name = "!!!".into()), "slug:"),
            (Box::new(|r| r.cron = Some("61 * * * *".into())), "cron:"),
            (Box::new(|r| r.cron = Some("* * *".into())), "cron:"),
            (Box::new(|r| r.cron = Some("0 0 30 2 *".into())), "cron:"),
            (
                Box::new(|r| {
                    r.cron = Some("* * * * *".into());
                    r.timezone = Some("Mars/Olympus".into());
                }),
                "timezone:",
            ),
            (Box::new(|r| r.timezone = Some("UTC".into())), "timezone:"),
            (
                Box::new(|r| {
                    r.cron = Some("* * * * *".into());
                    r.period = Some("1h".into());
                }),
                "cron:",
            ),
            (Box::new(|r| r.grace = Some("0s".into())), "grace:"),
            (Box::new(|r| r.grace = Some("soon".into())), "grace:"),
            (Box::new(|r| r.period = Some("400d".into())), "period:"),
            (Box::new(|r| r.schedule = Some("night".into())), "schedule:"),
        ];
        for (f, field) in cases {
            let e = req(f).unwrap_err();
            assert!(e.starts_with(field), "{e} should name {field}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("  Backup -- DB  "), "backup-db");
        assert_eq!(slugify("éé"), "");
        assert!(is_slug("a_b-1"));
        assert!(!is_slug("A"));
        assert!(!is_slug(""));
    }
}
