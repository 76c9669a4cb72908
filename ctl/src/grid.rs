//! A prefix grid in the terminal: 16 rows of 16 addresses, two characters
//! per cell. Every state has its own symbol, so the grid reads the same
//! without colour; with colour, answered cells are shaded by 1-minute mean
//! RTT on a colour-blind-safe (viridis-like) scale.

use std::fmt::Write as _;

use serde_json::Value;

/// RTT bands: upper bound (ms), ANSI 256-colour, legend label.
const BANDS: [(f64, u8, &str); 5] = [
    (1.0, 49, "<1ms"),
    (10.0, 37, "<10ms"),
    (50.0, 31, "<50ms"),
    (100.0, 61, "<100ms"),
    (f64::INFINITY, 54, ">=100ms"),
];

fn paint(text: &str, colour: Option<u8>, enabled: bool) -> String {
    match colour {
        Some(c) if enabled => format!("\x1b[38;5;{c}m{text}\x1b[0m"),
        _ => text.to_owned(),
    }
}

/// The symbol and colour of one cell.
fn cell(c: &Value) -> (&'static str, Option<u8>) {
    if c.get("monitored").and_then(Value::as_bool) != Some(true) {
        return ("··", None);
    }
    match c.get("state").and_then(Value::as_str) {
        Some("down") => ("XX", Some(160)),
        Some("partial") => ("!!", Some(214)),
        Some("stale") => ("??", Some(244)),
        _ => {
            let rtt = c.get("mean_ms_1m").and_then(Value::as_f64);
            let band = rtt.and_then(|r| BANDS.iter().find(|(max, ..)| r < *max));
            ("██", band.map(|b| b.1))
        }
    }
}

/// Renders the grid answer of `/api/v1/prefixes/{cidr}`.
pub fn render(v: &Value, colour: bool) -> String {
    let mut out = String::new();
    let cells = v
        .get("cells")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let prefix = v.get("prefix").and_then(Value::as_str).unwrap_or("?");
    let monitored = v.get("monitored").and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(out, "{prefix}: {monitored} monitored");
    if cells.len() == 256 {
        out.push_str("      ");
        for i in 0..16 {
            let _ = write!(out, "{i:<2x}");
        }
        out.push('\n');
        for (row, chunk) in cells.chunks(16).enumerate() {
            let _ = write!(out, ".{:<3}  ", row * 16);
            for c in chunk {
                let (sym, col) = cell(c);
                out.push_str(&paint(sym, col, colour));
            }
            out.push('\n');
        }
    } else {
        // IPv6 /64: the monitored addresses, one per line.
        for c in cells {
            let (sym, col) = cell(c);
            let addr = c.get("address").and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(out, "{} {addr}", paint(sym, col, colour));
        }
    }
    let mut legend: Vec<String> = BANDS
        .iter()
        .map(|(_, col, label)| format!("{} {label}", paint("██", Some(*col), colour)))
        .collect();
    legend.extend([
        format!("{} partial", paint("!!", Some(214), colour)),
        format!("{} down", paint("XX", Some(160), colour)),
        format!("{} stale", paint("??", Some(244), colour)),
        "·· not monitored".to_owned(),
    ]);
    let _ = writeln!(out, "{}", legend.join("  "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn symbols_without_colour_and_bands_with_it() {
        let mut cells: Vec<Value> = (0..256)
            .map(|i| json!({"address": format!("10.1.2.{i}"), "monitored": false}))
            .collect();
        cells[1] = json!({"monitored": true, "state": "up", "mean_ms_1m": 0.4});
        cells[2] = json!({"monitored": true, "state": "down"});
        cells[17] = json!({"monitored": true, "state": "up", "mean_ms_1m": 120.0});
        let v = json!({"prefix": "10.1.2.0/24", "monitored": 3, "cells": cells});
        let plain = render(&v, false);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines[0], "10.1.2.0/24: 3 monitored");
        assert!(lines[2].starts_with(".0    ··██XX··"), "{}", lines[2]);
        assert!(lines[3].starts_with(".16   ··██··"), "{}", lines[3]);
        assert!(!plain.contains('\x1b'));
        let coloured = render(&v, true);
        assert!(
            coloured.contains("\x1b[38;5;49m██"),
            "fast cell in the first band"
        );
        assert!(
            coloured.contains("\x1b[38;5;54m██"),
            "slow cell in the last band"
        );
        assert!(coloured.contains("\x1b[38;5;160mXX"));
    }
}
