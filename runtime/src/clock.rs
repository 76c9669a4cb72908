//! Wall-clock time as the wire and the store carry it: integer nanoseconds
//! or milliseconds since the Unix epoch. One definition for every caller.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (0 before 1970, saturating far ahead).
pub fn unix_nanos() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    unix_nanos() / 1_000_000
}

/// Unix seconds as RFC 3339 UTC to the second (`2026-11-21T10:00:00Z`);
/// the number itself for a time before 1970.
pub fn rfc3339_seconds(unix_secs: i64) -> String {
    u64::try_from(unix_secs).map_or_else(
        |_| unix_secs.to_string(),
        |secs| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .to_string()
        },
    )
}
