//! Prometheus metrics of the collector itself, served as text at
//! `/metrics` on the plain health listener. They describe the collector
//! (agents connected, ingest, acknowledgement latency, ingest-log size,
//! export lag and errors, analysis, each ingest-log consumer's lag and
//! restarts) and never carry tenant data: no tenant, agent or target
//! labels (only `consumer`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the acknowledgement-latency buckets.
const ACK_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; ACK_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, c) in ACK_BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, c) in ACK_BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Ingest counters, updated by the agent sessions.
#[derive(Debug, Default)]
pub struct Ingest {
    pub batches: AtomicU64,
    pub results: AtomicU64,
    pub duplicates: AtomicU64,
    pub heartbeats: AtomicU64,
    /// From receiving a batch to sending its acknowledgement.
    pub ack_latency: Histogram,
}

/// What the listener and sessions refused or slowed down, for
/// `/metrics`: a client hitting a limit is visible without reading logs.
#[derive(Debug, Default)]
pub struct Refusals {
    /// TLS handshakes that failed or timed out.
    pub handshakes: AtomicU64,
    /// Connections answered 429 for exceeding the per-certificate limit.
    pub connection_limit: AtomicU64,
    /// Open connections closed because their certificate was revoked,
    /// became untrusted on reload, or expired.
    pub closed_certificate: AtomicU64,
    /// Agent messages whose reading was delayed by the rate limit.
    pub paced_messages: AtomicU64,
}

/// One sample to render: name, type, help, value.
pub struct Sample<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub help: &'a str,
    pub value: f64,
}

/// One ingest-log consumer's figures (labelled by its name).
pub struct ConsumerFigures {
    pub name: &'static str,
    pub lag: crate::log::LogLag,
    pub restarts: u64,
}

/// Name, type, help and value of one per-consumer figure.
type ConsumerFigure = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ConsumerFigures, i64) -> f64,
);

/// The consumers' lag and restarts, labelled `consumer`.
#[allow(clippy::cast_precision_loss)]
fn render_consumers(consumers: &[ConsumerFigures], now_ms: i64, out: &mut String) {
    let figures: [ConsumerFigure; 3] = [
        (
            "sonde_collector_consumer_lag_batches",
            "gauge",
            "Ingest-log entries (batches and heartbeats) a consumer has not made durable yet.",
            |c, _| c.lag.entries as f64,
        ),
        (
            "sonde_collector_consumer_lag_seconds",
            "gauge",
            "Age of the oldest ingest-log entry a consumer has not made durable yet (0 when caught up).",
            |c, now| {
                c.lag
                    .oldest_ms
                    .map_or(0.0, |t| (now - t).max(0) as f64 / 1e3)
            },
        ),
        (
            "sonde_collector_consumer_restarts_total",
            "counter",
            "Times a consumer was rebuilt from its durable cursor after a panic.",
            |c, _| c.restarts as f64,
        ),
    ];
    for (name, kind, help, value) in figures {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in consumers {
            let _ = writeln!(
                out,
                "{name}{{consumer=\"{}\"}} {}",
                c.name,
                value(c, now_ms)
            );
        }
    }
}

/// Renders counters and gauges, the consumers', then the histograms.
pub fn render(samples: &[Sample<'_>], consumers: &[ConsumerFigures], ingest: &Ingest) -> String {
    let mut out = String::new();
    for s in samples {
        let _ = writeln!(
            out,
            "# HELP {n} {h}\n# TYPE {n} {k}\n{n} {v}",
            n = s.name,
            h = s.help,
            k = s.kind,
            v = s.value
        );
    }
    render_consumers(consumers, crate::store::now_ms(), &mut out);
    ingest.ack_latency.render(
        "sonde_collector_ack_latency_seconds",
        "Time from receiving a result batch to acknowledging it (durable).",
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(10));
        let mut s = String::new();
        h.render("x", "help", &mut s);
        assert!(s.contains("x_bucket{le=\"0.001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.05\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"5\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(
            s.contains("x_count 3\n") && s.contains("x_sum 10.0305\n"),
            "{s}"
        );
    }
}
