//! Availability of an agent or a heartbeat check: what it was in each
//! minute of the last 24 hours, and the share of the time it was up over
//! 24 hours, 7 days and 30 days.
//!
//! Computed from the event log (which keeps every transition: `agent-*`
//! and `check-*` events) — no second record of the same history. A minute
//! is `down` if the subject was down at any moment of it, else `up` if up
//! at any moment, else `off-hours`, else `none` (not known yet, new,
//! paused). Off-hours and none count neither as up nor as down: the share
//! is up / (up + down) minutes, `null` when there is neither. A check
//! with a monitoring schedule is off-hours in the minutes its schedule is
//! closed unless it is down then (its closed minutes leave no event).

use rusqlite::params;
use serde::Serialize;

use crate::consumers::alert::schedule::Schedule;
use crate::store::{EventKind, Store, StoreError};

/// One minute.
pub const MINUTE_MS: i64 = 60_000;
/// The windows whose share is given, in minutes.
pub const WINDOWS: [(&str, i64); 3] = [("24h", 1440), ("7d", 7 * 1440), ("30d", 30 * 1440)];

/// What a subject was, from the least to the most telling (a minute is
/// the most telling of what it held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    None,
    OffHours,
    Up,
    Down,
}

/// What an event makes its subject.
pub fn presence_after(kind: EventKind) -> Option<Presence> {
    Some(match kind {
        EventKind::AgentRegistered
        | EventKind::AgentBack
        | EventKind::AgentOnHours
        | EventKind::CheckUp => Presence::Up,
        EventKind::AgentMissing | EventKind::CheckDown | EventKind::CheckFailed => Presence::Down,
        EventKind::AgentOffHours => Presence::OffHours,
        EventKind::CheckPaused | EventKind::CheckResumed => Presence::None,
        _ => return None,
    })
}

/// Per-minute presence over `minutes` minutes ending with the one that
/// holds `now_ms`, from the presence before the window (`initial`) and
/// the changes in it (time-ordered); `closed(minute start)`, when given,
/// marks a minute off-hours unless it is down.
pub fn minutes(
    initial: Presence,
    changes: &[(i64, Presence)],
    now_ms: i64,
    minutes: i64,
    closed: Option<&dyn Fn(i64) -> bool>,
) -> Vec<Presence> {
    let first = (now_ms.div_euclid(MINUTE_MS) - minutes + 1) * MINUTE_MS;
    let mut out = Vec::with_capacity(usize::try_from(minutes).unwrap_or(0));
    let mut current = initial;
    let mut next = changes.iter().peekable();
    // Changes before the window set where it starts.
    while let Some((_, p)) = next.next_if(|(at, _)| *at < first) {
        current = *p;
    }
    for m in 0..minutes {
        let start = first + m * MINUTE_MS;
        // What it was as the minute began …
        while let Some((_, p)) = next.next_if(|(at, _)| *at <= start) {
            current = *p;
        }
        // … and the most telling of what it became in it.
        let mut worst = current;
        while let Some((_, p)) = next.next_if(|(at, _)| *at < start + MINUTE_MS) {
            current = *p;
            worst = worst.max(current);
        }
        let mut minute = worst;
        if minute != Presence::Down && closed.is_some_and(|c| c(start)) {
            minute = Presence::OffHours;
        }
        out.push(minute);
    }
    out
}

/// The share of up minutes among up and down ones, in percent.
pub fn share(minutes: &[Presence]) -> Option<f64> {
    let up = minutes.iter().filter(|p| **p == Presence::Up).count();
    let down = minutes.iter().filter(|p| **p == Presence::Down).count();
    #[allow(clippy::cast_precision_loss)]
    (up + down > 0).then(|| up as f64 * 100.0 / (up + down) as f64)
}

/// The events that say what a subject was, from `since_ms` on, with the
/// last one before (its presence then). `agent` is the agent's name, or
/// `""` with `check` the check's id.
fn history(
    store: &Store,
    tenant: &str,
    agent: &str,
    check: Option<i64>,
    since_ms: i64,
) -> Result<(Presence, Vec<(i64, Presence)>), StoreError> {
    let kinds: Vec<&str> = EventKind::ALL
        .iter()
        .filter(|k| presence_after(**k).is_some())
        .filter(|k| {
            k.as_str()
                .starts_with(if check.is_some() { "check-" } else { "agent-" })
        })
        .map(|k| k.as_str())
        .collect();
    let list = kinds
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(",");
    let filter = format!(
        "tenant = ?1 AND agent = ?2 AND kind IN ({list})
         AND (?3 IS NULL OR json_extract(detail, '$.id') = ?3)"
    );
    store.with_read(|c| {
        let parse = |kind: &str| {
            EventKind::ALL
                .iter()
                .find(|k| k.as_str() == kind)
                .and_then(|k| presence_after(*k))
                .unwrap_or(Presence::None)
        };
        let before: Option<String> = c
            .query_row(
                &format!(
                    "SELECT kind FROM events WHERE {filter} AND at_ms < ?4 ORDER BY id DESC LIMIT 1"
                ),
                params![tenant, agent, check, since_ms],
                |r| r.get(0),
            )
            .ok();
        let mut stmt = c.prepare(&format!(
            "SELECT at_ms, kind FROM events WHERE {filter} AND at_ms >= ?4 ORDER BY id"
        ))?;
        let changes = stmt
            .query_map(params![tenant, agent, check, since_ms], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .map(|r| r.map(|(at, k)| (at, parse(&k))))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((before.map_or(Presence::None, |k| parse(&k)), changes))
    })
}

/// The availability answer: the last 24 h minute by minute (oldest
/// first) and the share of each window.
fn answer(
    initial: Presence,
    changes: &[(i64, Presence)],
    now_ms: i64,
    closed: Option<&dyn Fn(i64) -> bool>,
) -> serde_json::Value {
    let longest = WINDOWS[WINDOWS.len() - 1].1;
    let all = minutes(initial, changes, now_ms, longest, closed);
    let mut shares = serde_json::Map::new();
    for (name, n) in WINDOWS {
        let from = all.len() - usize::try_from(n).unwrap_or(0);
        shares.insert(name.to_owned(), serde_json::json!(share(&all[from..])));
    }
    let day = &all[all.len() - 1440..];
    serde_json::json!({
        "from_ms": (now_ms.div_euclid(MINUTE_MS) - 1439) * MINUTE_MS,
        "minute_ms": MINUTE_MS,
        "minutes": day,
        "availability": shares,
    })
}

/// An agent's availability.
pub fn of_agent(
    store: &Store,
    tenant: &str,
    name: &str,
    now_ms: i64,
) -> Result<serde_json::Value, StoreError> {
    let since = now_ms - WINDOWS[2].1 * MINUTE_MS;
    let (initial, changes) = history(store, tenant, name, None, since)?;
    Ok(answer(initial, &changes, now_ms, None))
}

/// A check's availability (its schedule's closed minutes off-hours).
pub fn of_check(
    store: &Store,
    tenant: &str,
    id: i64,
    schedule: Option<&Schedule>,
    now_ms: i64,
) -> Result<serde_json::Value, StoreError> {
    let since = now_ms - WINDOWS[2].1 * MINUTE_MS;
    let (initial, changes) = history(store, tenant, "", Some(id), since)?;
    let closed = schedule.map(|s| move |ms: i64| !s.is_open(ms));
    Ok(answer(
        initial,
        &changes,
        now_ms,
        closed.as_ref().map(|c| c as &dyn Fn(i64) -> bool),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Presence::{Down, None as Unknown, OffHours, Up};

    const M: i64 = MINUTE_MS;

    #[test]
    fn from_the_event_log_of_one_agent_or_check_only() {
        use crate::store::{AgentKey, insert_event};
        let store = Store::open(std::path::Path::new(":memory:")).unwrap();
        let now = 100_000 * M;
        let ev = |at: i64, tenant: &str, agent: &str, kind: EventKind, id: i64| {
            let key = AgentKey {
                tenant: tenant.into(),
                name: agent.into(),
            };
            let detail = serde_json::json!({ "id": id, "check": "c" });
            store
                .with(|c| insert_event(c, at, &key, kind, &detail, None))
                .unwrap();
        };
        // Check 7 of tenant t: up 40 days ago, down 30 min ago, up 10 min ago.
        ev(now - 40 * 1440 * M, "t", "", EventKind::CheckUp, 7);
        ev(now - 30 * M, "t", "", EventKind::CheckDown, 7);
        ev(now - 10 * M, "t", "", EventKind::CheckUp, 7);
        // Noise: another check, another tenant, an agent, a non-state event.
        ev(now - 20 * M, "t", "", EventKind::CheckDown, 8);
        ev(now - 20 * M, "u", "", EventKind::CheckDown, 7);
        ev(now - 20 * M, "t", "a", EventKind::AgentMissing, 0);
        ev(now - 5 * M, "t", "", EventKind::CheckStarted, 7);
        let v = of_check(&store, "t", 7, None, now).unwrap();
        let minutes = v["minutes"].as_array().unwrap();
        let down = minutes.iter().filter(|m| *m == "down").count();
        assert_eq!(down, 20, "down from -30 to -10 min");
        assert_eq!(minutes[0], "up");
        let day = v["availability"]["24h"].as_f64().unwrap();
        assert!((day - 1420.0 * 100.0 / 1440.0).abs() < 1e-9, "{day}");
        // The agent: missing since 20 minutes, nothing before.
        let v = of_agent(&store, "t", "a", now).unwrap();
        let minutes = v["minutes"].as_array().unwrap();
        assert_eq!(minutes[0], "none");
        assert_eq!(minutes.iter().filter(|m| *m == "down").count(), 21);
        assert_eq!(v["availability"]["30d"].as_f64(), Some(0.0));
    }

    #[test]
    fn a_minute_is_down_if_down_at_all_else_up_if_up_at_all() {
        let now = 1_000 * M + 30_000; // inside minute 1000
        // Up from before the window; down for 10 s inside minute 996; off
        // hours from minute 998 on.
        let changes = [
            (996 * M + 20_000, Down),
            (996 * M + 30_000, Up),
            (998 * M, OffHours),
        ];
        let m = minutes(Up, &changes, now, 6, None);
        assert_eq!(m, [Up, Down, Up, OffHours, OffHours, OffHours]);
        // Two up minutes, one down; off-hours count for neither.
        assert_eq!(share(&m), Some(200.0 / 3.0));
        // Nothing known: no share.
        assert_eq!(share(&minutes(Unknown, &[], now, 5, None)), None);
        // A change before the window sets where it starts.
        let m = minutes(Unknown, &[(10 * M, Down)], now, 3, None);
        assert_eq!(m, [Down, Down, Down]);
        // Closed minutes are off-hours unless down.
        let closed = |start: i64| start >= 999 * M;
        let m = minutes(Up, &[(1_000 * M + 1, Down)], now, 3, Some(&closed));
        assert_eq!(m, [Up, OffHours, Down]);
    }
}
