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
