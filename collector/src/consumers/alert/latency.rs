//! The latency rule: a series whose minute-average RTT was above the
//! tenant's `threshold` in at least `minutes` of its last `of` complete
//! minutes fires; it resolves when that no longer holds. Minutes are the
//! analysis' minute buckets (by the agents' send times); a minute with no
//! answer has no latency and does not count as above (loss is the outage
//! rules' business). Evaluated once per minute.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rusqlite::params;

use super::config::Severity;
use super::rules::{Update, alert};
use super::{Labels, segment};
use crate::config::Config;
use crate::observation::prefix_of;
use crate::store::{Store, StoreError};

/// One minute of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    pub tenant: String,
    pub agent: String,
    pub probe: String,
    pub target: String,
    pub address: Option<String>,
    pub unit: i64,
    pub probes: u32,
    pub lost: u32,
    pub sum_ms: f64,
}

/// Minute buckets with `from <= unit < to`.
pub fn minutes(store: &Store, from: i64, to: i64) -> Result<Vec<Minute>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare(
            "SELECT s.tenant, s.agent, s.probe, s.target, s.address, b.unit, b.probes, b.lost, b.sum_ms
             FROM minute_buckets b JOIN series s ON s.id = b.series_id
             WHERE b.unit >= ?1 AND b.unit < ?2",
        )?;
        stmt.query_map(params![from, to], |r| {
            Ok(Minute {
                tenant: r.get(0)?,
                agent: r.get(1)?,
                probe: r.get(2)?,
                target: r.get(3)?,
                address: r.get(4)?,
                unit: r.get(5)?,
                probes: r.get(6)?,
                lost: r.get(7)?,
                sum_ms: r.get(8)?,
            })
        })?
        .collect()
    })
}

/// The widest window any tenant's enabled latency rule looks at.
pub fn widest(config: &Config) -> Option<u32> {
    // A tenant without its own latency rule has the default one.
    std::iter::once(config.alerting.rules.latency)
        .chain(config.alerting.tenant.iter().filter_map(|t| t.latency))
        .filter(|l| l.enabled)
        .map(|l| l.of)
        .max()
}

/// The latency alerts that fire given the minutes before `to` (the first
/// incomplete minute): one `Fire` each.
pub fn evaluate(config: &Config, minutes: &[Minute], to: i64) -> Vec<Update> {
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str);
    let tenancy = config.tenancy();
    let mut series: BTreeMap<Key<'_>, Vec<&Minute>> = BTreeMap::new();
    for m in minutes {
        series
            .entry((&m.tenant, &m.agent, &m.probe, &m.target))
            .or_default()
            .push(m);
    }
    let mut out = Vec::new();
    for ((owner, agent, probe, target), ms) in series {
        let address: Option<IpAddr> = ms[0].address.as_deref().and_then(|a| a.parse().ok());
        let prefix = address
            .map(|a| prefix_of(a).to_string())
            .unwrap_or_default();
        // The tenants that see this measurement (`access.rs`).
        for tenant in tenancy.audience(owner, address) {
            let tenant = tenant.as_str();
            let rule = config.alerting.rules_for(tenant).latency;
            if !rule.enabled {
                continue;
            }
            let threshold = rule.threshold.as_secs_f64() * 1000.0;
            let from = to - i64::from(rule.of);
            let means: Vec<f64> = ms
                .iter()
                .filter(|m| m.unit >= from && m.unit < to && m.probes > m.lost)
                .map(|m| m.sum_ms / f64::from(m.probes - m.lost))
                .collect();
            let above: Vec<f64> = means.iter().copied().filter(|v| *v > threshold).collect();
            if above.len() < rule.minutes as usize {
                continue;
            }
            #[allow(clippy::cast_precision_loss)]
            let mean = above.iter().sum::<f64>() / above.len() as f64;
            let mut a = alert(
                tenant,
                "latency",
                rule.severity.unwrap_or(Severity::Warning),
                vec![
                    ("agent", agent.to_owned()),
                    ("probe", probe.to_owned()),
                    ("target", target.to_owned()),
                    ("prefix", prefix.clone()),
                ],
                format!(
                    "{probe} latency from {agent} to {target} above {} ms in {} of the last {} minutes (mean {mean:.1} ms)",
                    threshold,
                    above.len(),
                    rule.of
                ),
                format!("/api/v1/series/{}/{}", segment(agent), segment(target)),
                (to - 1) * 60_000,
            );
            a.detail =
                serde_json::json!({ "minutes_above": above.len(), "of": rule.of, "mean_ms": mean });
            out.push(Update::Fire {
                alert: a,
                hold_ms: None,
            });
        }
    }
    out
}

/// The labels that identify a latency alert (for resolving it).
pub fn identity(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "severity")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
