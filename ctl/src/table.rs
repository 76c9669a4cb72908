//! Plain-text tables for the terminal: left-aligned columns, two spaces
//! apart, a header line; values taken from the API's JSON as they are.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Renders `rows` under `headers`.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON value as a cell: strings bare, null as `-`; what others wrote
/// (names, comments, program names) with control and bidi characters,
/// line breaks included, as visible escapes, so it keeps its line and
/// column (`sonde_runtime::text::safe`).
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => sonde_runtime::text::safe(s).into_owned(),
        Some(other) => other.to_string(),
    }
}

/// Unix milliseconds as RFC 3339 UTC (seconds), or `-`.
pub fn time_ms(v: Option<&Value>) -> String {
    v.and_then(Value::as_u64)
        .and_then(|ms| i64::try_from(ms).ok())
        .map_or_else(
            || "-".to_owned(),
            |ms| sonde_runtime::clock::rfc3339_seconds(ms.div_euclid(1000)),
        )
}

/// How long ago unix milliseconds `v` was, relative to `now`, or `-`.
pub fn age_ms(v: Option<&Value>, now: SystemTime) -> String {
    v.and_then(Value::as_u64).map_or_else(
        || "-".to_owned(),
        |ms| {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let secs = now.duration_since(t).unwrap_or_default().as_secs();
            format!("{secs}s ago")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let out = render(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "up".into()],
                vec!["longer-name".into(), "missing".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME         STATE\na            up\nlonger-name  missing\n"
        );
    }

    #[test]
    fn cells_and_times() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!(null))), "-");
        assert_eq!(cell(Some(&json!("x"))), "x");
        assert_eq!(cell(Some(&json!(true))), "true");
        assert_eq!(time_ms(Some(&json!(1_000))), "1970-01-01T00:00:01Z");
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(age_ms(Some(&json!(40_000)), now), "60s ago");
        assert_eq!(age_ms(None, now), "-");
    }
}
