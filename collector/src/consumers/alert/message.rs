//! A notification as receivers get it: one group of one route — what is
//! firing, flapping, resolved, and what fired and resolved while the
//! route's schedule held notifications back — with its renderings (title,
//! plain text, HTML, a short SMS text). Stored in the outbox as JSON, so a
//! retry after a restart sends the same content.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{Alert, Labels, Severity};

/// One alert in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub fingerprint: String,
    pub labels: Labels,
    pub severity: Severity,
    pub summary: String,
    pub link: String,
    pub starts_ms: i64,
    pub ends_ms: Option<i64>,
    /// For what fired and resolved while held back by a schedule: how many
    /// times it fired (then `starts_ms` is the first start, `ends_ms` the
    /// last end). 0 elsewhere.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_times: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl From<&Alert> for AlertView {
    /// What a notification shows of an alert: names and summaries carry
    /// what agents reported (target names), so their control and bidi
    /// characters become visible escapes (`sonde_runtime::text`).
    fn from(a: &Alert) -> Self {
        let safe = |s: &str| sonde_runtime::text::safe(s).into_owned();
        Self {
            fingerprint: a.fingerprint.clone(),
            labels: a.labels.iter().map(|(k, v)| (k.clone(), safe(v))).collect(),
            severity: a.severity,
            summary: safe(&a.summary),
            link: safe(&a.link),
            starts_ms: a.starts_ms,
            ends_ms: a.ends_ms,
            held_times: 0,
        }
    }
}

impl AlertView {
    /// What a resolution says of the alert ("target 10.1.2.3 is up
    /// again", not its firing summary "… is down"), from its labels.
    pub fn resolved_summary(&self) -> String {
        let l = |k: &str| self.labels.get(k).map_or("", String::as_str);
        match l("rule") {
            "agent-missing" => format!("agent {}/{} is back", l("tenant"), l("agent")),
            "outage" => match l("scope") {
                "agent-network" => format!("agent {} has its network back", l("subject")),
                scope => format!("{scope} {} is up again", l("subject")),
            },
            "open-port" => format!("{}: nothing listens on {} any more", l("agent"), l("port")),
            "latency" => format!(
                "{} latency from {} to {} is back under the threshold",
                l("probe"),
                l("agent"),
                l("target")
            ),
            "no-data" => "the collector receives results again".to_owned(),
            "check-down" | "check-failed" => {
                format!("check {}/{} is up again", l("tenant"), l("check"))
            }
            _ => format!("resolved: {}", self.summary),
        }
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub route: String,
    pub receiver: String,
    /// The route's tenant (`None`: an all-tenant route).
    pub tenant: Option<String>,
    /// The group's label values.
    pub group: Labels,
    pub firing: Vec<AlertView>,
    pub flapping: Vec<AlertView>,
    pub resolved: Vec<AlertView>,
    /// Fired and resolved while the schedule was closed: summarised once.
    pub resolved_while_deferred: Vec<AlertView>,
    pub at_ms: i64,
    /// Held back by the schedule since then.
    pub deferred_since_ms: Option<i64>,
    pub external_url: Option<String>,
}

/// `2026-11-21 09:00:00 UTC`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// Escapes text for HTML (mail bodies, the UI's error pages).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Message {
    /// Whether anything in it is firing or flapping.
    pub fn is_firing(&self) -> bool {
        !self.firing.is_empty() || !self.flapping.is_empty()
    }

    /// The highest severity firing, or `info` for an all-clear.
    pub fn severity(&self) -> Severity {
        self.firing
            .iter()
            .chain(&self.flapping)
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Info)
    }

    /// The full URL of an API path.
    pub fn url(&self, link: &str) -> String {
        match &self.external_url {
            Some(base) => format!("{}{link}", base.trim_end_matches('/')),
            None => link.to_owned(),
        }
    }

    /// Sections in the order they are shown: (heading, alerts).
    pub fn sections(&self) -> Vec<(&'static str, &[AlertView])> {
        [
            ("Firing", self.firing.as_slice()),
            (
                "Flapping (held: one notification until stable)",
                &self.flapping,
            ),
            ("Resolved", &self.resolved),
            (
                "Fired and resolved outside the schedule",
                &self.resolved_while_deferred,
            ),
        ]
        .into_iter()
        .filter(|(_, a)| !a.is_empty())
        .collect()
    }

    /// `[FIRING:2] acme: prefix 10.1.2.0/24 is down (+1 more)`;
    /// `[RESOLVED:1] acme: prefix 10.1.2.0/24 is up again`.
    pub fn title(&self) -> String {
        let (tag, list) = if !self.firing.is_empty() {
            (format!("FIRING:{}", self.firing.len()), &self.firing)
        } else if !self.flapping.is_empty() {
            (format!("FLAPPING:{}", self.flapping.len()), &self.flapping)
        } else if !self.resolved.is_empty() {
            (format!("RESOLVED:{}", self.resolved.len()), &self.resolved)
        } else {
            (
                format!("RESOLVED:{}", self.resolved_while_deferred.len()),
                &self.resolved_while_deferred,
            )
        };
        let first = match list.first() {
            None => String::new(),
            Some(a) if self.is_firing() => a.summary.clone(),
            Some(a) => a.resolved_summary(),
        };
        let more = match list.len() {
            0 | 1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        let tenant = self
            .group
            .get("tenant")
            .filter(|t| !t.is_empty())
            .map_or(String::new(), |t| format!("{t}: "));
        format!("[{tag}] {tenant}{first}{more}")
    }

    fn line(a: &AlertView) -> String {
        let mut s = match a.held_times {
            0 => format!(
                "[{}] {} (since {}",
                a.severity.as_str(),
                a.summary,
                time(a.starts_ms)
            ),
            1 => format!(
                "[{}] {} (fired once, {}",
                a.severity.as_str(),
                a.summary,
                time(a.starts_ms)
            ),
            n => format!(
                "[{}] {} (fired {n} times, first {}",
                a.severity.as_str(),
                a.summary,
                time(a.starts_ms)
            ),
        };
        if let Some(end) = a.ends_ms {
            let _ = write!(s, ", resolved {}", time(end));
        }
        s.push(')');
        s
    }

    /// Plain-text body.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(since) = self.deferred_since_ms {
            let _ = writeln!(
                out,
                "Held back by the schedule of route {} since {}.\n",
                self.route,
                time(since)
            );
        }
        for (heading, alerts) in self.sections() {
            let _ = writeln!(out, "{heading}:");
            for a in alerts {
                let _ = writeln!(out, "- {}\n  {}", Self::line(a), self.url(&a.link));
            }
            out.push('\n');
        }
        let group: Vec<String> = self
            .group
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "Group {{{}}} of route {}, {}.",
            group.join(", "),
            self.route,
            time(self.at_ms)
        );
        out
    }

    /// HTML body (escaped; no scripts, no remote content).
    pub fn html(&self) -> String {
        let mut out = String::from("<html><body style=\"font-family: sans-serif\">");
        let _ = write!(out, "<h2>{}</h2>", esc(&self.title()));
        if let Some(since) = self.deferred_since_ms {
            let _ = write!(
                out,
                "<p>Held back by the schedule of route {} since {}.</p>",
                esc(&self.route),
                esc(&time(since))
            );
        }
        for (heading, alerts) in self.sections() {
            let _ = write!(out, "<h3>{}</h3><ul>", esc(heading));
            for a in alerts {
                let _ = write!(
                    out,
                    "<li>{} — <a href=\"{}\">{}</a></li>",
                    esc(&Self::line(a)),
                    esc(&self.url(&a.link)),
                    esc(&a.link)
                );
            }
            out.push_str("</ul>");
        }
        out.push_str("</body></html>");
        out
    }

    /// A short text for SMS: the title and the first summaries, cut to
    /// `max` characters (with `…` when cut).
    pub fn short(&self, max: usize) -> String {
        let mut s = self.title();
        for (heading, alerts) in self.sections() {
            let _ = write!(s, " | {heading}:");
            for a in alerts {
                let _ = write!(s, " {};", a.summary);
            }
        }
        cut(&s, max)
    }
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
