//! Silences: "do not notify about alerts matching these labels between
//! these times". Created and expired by a tenant's admins through the API
//! (author from the certificate); a silence covers only its tenant's
//! alerts, or every tenant's when an operator tenant's admin made it. A
//! silenced alert still fires and is listed, as silenced.

use serde::{Deserialize, Serialize};

use super::Alert;
use super::matcher::{Matcher, all_match};

/// A silence as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    /// The tenant whose alerts it covers; `None`: every tenant.
    pub tenant: Option<String>,
    pub matchers: Vec<Matcher>,
    pub starts_ms: i64,
    pub ends_ms: i64,
    /// `tenant/role/name` of the certificate that made it.
    pub author: String,
    pub comment: String,
    pub created_ms: i64,
    /// Who expired it early, if anyone.
    #[serde(default)]
    pub expired_by: Option<String>,
}

impl Silence {
    pub fn active(&self, now_ms: i64) -> bool {
        self.starts_ms <= now_ms && now_ms < self.ends_ms
    }

    /// `pending`, `active` or `expired`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.starts_ms {
            "pending"
        } else if now_ms < self.ends_ms {
            "active"
        } else {
            "expired"
        }
    }

    /// Whether it covers `alert` (at any time; see [`Self::active`]).
    pub fn covers(&self, alert: &Alert) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == alert.tenant())
            && all_match(&self.matchers, &alert.labels)
    }
}

/// The ids of the silences muting `alert` at `now_ms`.
pub fn silenced_by(silences: &[Silence], alert: &Alert, now_ms: i64) -> Vec<i64> {
    silences
        .iter()
        .filter(|s| s.active(now_ms) && s.covers(alert))
        .map(|s| s.id)
        .collect()
}

/// Longest silence accepted.
pub const MAX_DURATION_MS: i64 = 366 * 86_400_000;
const MAX_MATCHERS: usize = 32;
const MAX_COMMENT: usize = 4096;

/// A silence as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex`.
    pub matchers: Vec<String>,
    /// RFC 3339 start (default now).
    #[serde(default)]
    pub starts: Option<String>,
    /// RFC 3339 end, or …
    #[serde(default)]
    pub ends: Option<String>,
    /// … a duration from the start (`2h`).
    #[serde(default)]
    pub duration: Option<String>,
    pub comment: String,
    /// Operators only: the tenant whose alerts it covers (default: all
    /// tenants). Others' silences always cover their own tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

fn rfc3339(key: &str, s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{key}: {s:?} is not an RFC 3339 time (2026-11-21T09:00:00Z): {e}"))
}

impl NewSilence {
    /// Checks the request and makes the silence (id 0 until stored).
    pub fn build(
        self,
        tenant: Option<String>,
        author: String,
        now_ms: i64,
    ) -> Result<Silence, String> {
        if self.matchers.is_empty() {
            return Err("matchers: at least one matcher is needed (e.g. agent=edge-1)".into());
        }
        if self.matchers.len() > MAX_MATCHERS {
            return Err(format!("matchers: at most {MAX_MATCHERS}"));
        }
        let matchers = self
            .matchers
            .iter()
            .map(|m| Matcher::parse(m).map_err(|e| format!("matchers: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let comment = self.comment.trim().to_owned();
        if comment.is_empty() || comment.len() > MAX_COMMENT {
            return Err(format!("comment: say why (1 to {MAX_COMMENT} bytes)"));
        }
        let starts_ms = match &self.starts {
            Some(s) => rfc3339("starts", s)?,
            None => now_ms,
        };
        let ends_ms = match (&self.ends, &self.duration) {
            (Some(e), None) => rfc3339("ends", e)?,
            (None, Some(d)) => {
                let d =
                    humantime::parse_duration(d).map_err(|e| format!("duration: {d:?}: {e}"))?;
                starts_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            _ => return Err("give ends or duration (one of them)".into()),
        };
        if ends_ms <= starts_ms {
            return Err("ends: must be after starts".into());
        }
        if ends_ms <= now_ms {
            return Err("ends: already in the past".into());
        }
        if ends_ms - starts_ms > MAX_DURATION_MS {
            return Err("duration: at most 366 days".into());
        }
        Ok(Silence {
            id: 0,
            tenant,
            matchers,
            starts_ms,
            ends_ms,
            author,
            comment,
            created_ms: now_ms,
            expired_by: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::alert::Severity;
    use crate::consumers::alert::rules::alert;

    fn new(matchers: &[&str], duration: Option<&str>, ends: Option<&str>) -> NewSilence {
        NewSilence {
            matchers: matchers.iter().map(|m| (*m).to_owned()).collect(),
            starts: None,
            ends: ends.map(str::to_owned),
            duration: duration.map(str::to_owned),
            comment: "maintenance".into(),
            tenant: None,
        }
    }

    #[test]
    fn covers_its_tenant_between_its_times() {
        let now = 1_000_000;
        let s = new(&["agent=edge-1"], Some("1h"), None)
            .build(Some("acme".into()), "acme/admin/ann".into(), now)
            .unwrap();
        assert_eq!((s.starts_ms, s.ends_ms), (now, now + 3_600_000));
        let a = |tenant: &str, agent: &str| {
            alert(
                tenant,
                "agent-missing",
                Severity::Critical,
                vec![("agent", agent.to_owned())],
                String::new(),
                String::new(),
                0,
            )
        };
        assert_eq!(
            silenced_by(std::slice::from_ref(&s), &a("acme", "edge-1"), now),
            vec![0]
        );
        assert!(silenced_by(std::slice::from_ref(&s), &a("acme", "edge-2"), now).is_empty());
        assert!(silenced_by(std::slice::from_ref(&s), &a("globex", "edge-1"), now).is_empty());
        assert!(
            silenced_by(
                std::slice::from_ref(&s),
                &a("acme", "edge-1"),
                now + 3_600_000
            )
            .is_empty()
        );
        assert_eq!(s.state(now - 1), "pending");
        assert_eq!(s.state(now + 3_600_000), "expired");
        let all = Silence { tenant: None, ..s };
        assert_eq!(silenced_by(&[all], &a("globex", "edge-1"), now), vec![0]);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let e = |n: NewSilence| n.build(None, String::new(), 0).unwrap_err();
        assert!(e(new(&[], Some("1h"), None)).starts_with("matchers: at least one"));
        assert!(e(new(&["agent"], Some("1h"), None)).starts_with("matchers: \"agent\""));
        assert!(e(new(&["a=b"], None, None)).contains("give ends or duration"));
        assert!(e(new(&["a=b"], Some("soon"), None)).starts_with("duration: \"soon\""));
        assert!(e(new(&["a=b"], None, Some("yesterday"))).starts_with("ends: \"yesterday\""));
        assert!(e(new(&["a=b"], Some("400days"), None)).contains("at most 366 days"));
        let mut n = new(&["a=b"], Some("1h"), None);
        n.comment = "  ".into();
        assert!(e(n).starts_with("comment:"));
    }
}
