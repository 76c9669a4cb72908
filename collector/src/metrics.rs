//! Prometheus metrics of the collector itself, served as text at
//! `/metrics` on the plain health listener. They describe the collector
//! (agents connected, ingest, acknowledgement latency, ingest-log size,
//! export lag and errors, analysis, each ingest-log consumer's lag and
//! restarts) and never carry tenant data: no tenant, agent or target
//! labels (only `consumer`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{self, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::Shared;

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
            "Ingest-log entries (batches and heartbeats) a consumer has not processed yet (applied; for the export, written).",
            |c, _| c.lag.entries as f64,
        ),
        (
            "sonde_collector_consumer_lag_seconds",
            "gauge",
            "Age of the oldest ingest-log entry a consumer has not processed yet (0 when caught up).",
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

/// `/metrics`: the collector's own figures, no tenant data.
// A flat table of figures; splitting it would only scatter it.
#[allow(clippy::too_many_lines)]
pub(crate) async fn handler(State(shared): State<Arc<Shared>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let export = shared.export.clone();
    let position = shared.analysis.stats.position.load(Relaxed);
    let registered = shared.consumers.processed();
    let figures = shared
        .store
        .run(move |s| {
            let export = export.map(|h| h.status(s)).transpose()?;
            let log = crate::log::SqliteLog::new(s.clone());
            let mut consumers = Vec::new();
            for (name, processed, restarts) in registered {
                let lag = log.lag_now(processed.max(0))?;
                consumers.push(ConsumerFigures {
                    name,
                    lag,
                    restarts,
                });
            }
            Ok((log.size_now()?, log.lag_now(position)?, export, consumers))
        })
        .await;
    let Ok(((log_entries, log_bytes), analysis_lag, export, consumers)) = figures else {
        return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
    };
    #[allow(clippy::cast_precision_loss)]
    let f = |v: u64| v as f64;
    let i = &shared.ingest;
    let a = &shared.analysis.stats;
    let series_in_memory = u64::try_from(shared.analysis.read().len()).unwrap_or(u64::MAX);
    let refused = &shared.refusals;
    let certs = &shared.certificates;
    #[allow(clippy::cast_precision_loss)]
    let secs = |v: &std::sync::atomic::AtomicI64| v.load(Relaxed) as f64;
    let mut samples = vec![
        Sample {
            name: "sonde_collector_tls_handshakes_failed_total",
            kind: "counter",
            help: "TLS handshakes refused or timed out ([limits] handshake-timeout).",
            value: f(refused.handshakes.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_connections_refused_total",
            kind: "counter",
            help: "Connections answered 429 over [limits] connections-per-certificate.",
            value: f(refused.connection_limit.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_connections_closed_certificate_total",
            kind: "counter",
            help: "Open connections closed because their certificate was revoked, became untrusted on reload, or expired.",
            value: f(refused.closed_certificate.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_messages_paced_total",
            kind: "counter",
            help: "Agent messages read late because the session exceeded [limits] messages-per-second.",
            value: f(refused.paced_messages.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_server_certificate_expiry_seconds",
            kind: "gauge",
            help: "Seconds until the collector's own certificate expires (negative: expired).",
            value: secs(&certs.server_seconds_left),
        },
        Sample {
            name: "sonde_collector_ca_certificate_expiry_seconds",
            kind: "gauge",
            help: "Seconds until the first CA certificate in [tls] ca expires.",
            value: secs(&certs.ca_seconds_left),
        },
        Sample {
            name: "sonde_collector_client_certificates_expiring",
            kind: "gauge",
            help: "Client certificates seen connecting that expire within [tls] expiry-warning.",
            value: f(certs.clients_expiring.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_connected_agents",
            kind: "gauge",
            help: "Agents with an open session.",
            value: f(shared.sessions.connected() as u64),
        },
        Sample {
            name: "sonde_collector_ingest_batches_total",
            kind: "counter",
            help: "Result batches made durable.",
            value: f(i.batches.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_ingest_results_total",
            kind: "counter",
            help: "Probe results made durable.",
            value: f(i.results.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_ingest_duplicate_batches_total",
            kind: "counter",
            help: "Replayed batches acknowledged again without a second copy.",
            value: f(i.duplicates.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_heartbeats_total",
            kind: "counter",
            help: "Heartbeats received.",
            value: f(i.heartbeats.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_ingest_log_entries",
            kind: "gauge",
            help: "Entries in the ingest log.",
            value: f(log_entries),
        },
        Sample {
            name: "sonde_collector_ingest_log_bytes",
            kind: "gauge",
            help: "Payload bytes in the ingest log.",
            value: f(log_bytes),
        },
        Sample {
            name: "sonde_collector_analysis_lag_entries",
            kind: "gauge",
            help: "Ingest-log entries not yet analysed.",
            value: f(analysis_lag.entries),
        },
        Sample {
            name: "sonde_collector_analysis_results_total",
            kind: "counter",
            help: "Results analysed.",
            value: f(a.results.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_outages_detected_total",
            kind: "counter",
            help: "Per-series outages detected.",
            value: f(a.outages_started.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_route_changes_total",
            kind: "counter",
            help: "Route changes detected.",
            value: f(a.route_changes.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_series",
            kind: "gauge",
            help: "Series held in memory by the analysis.",
            value: f(series_in_memory),
        },
        Sample {
            name: "sonde_collector_series_retired_total",
            kind: "counter",
            help: "Series that left memory (no definition makes them, no results).",
            value: f(a.retired.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_results_unanalysed_total",
            kind: "counter",
            help: "Results not analysed because their tenant is at its max-series.",
            value: f(a.refused.load(Relaxed)),
        },
    ];
    if let Some(e) = export {
        samples.extend([
            Sample {
                name: "sonde_collector_export_lag_entries",
                kind: "gauge",
                help: "Ingest-log entries not yet exported to InfluxDB.",
                value: f(e.lag.entries),
            },
            Sample {
                name: "sonde_collector_export_lag_results",
                kind: "gauge",
                help: "Probe results not yet exported to InfluxDB.",
                value: f(e.lag.results),
            },
            Sample {
                name: "sonde_collector_export_lag_seconds",
                kind: "gauge",
                help: "Age of the oldest entry not yet exported.",
                value: e.lag_seconds,
            },
            Sample {
                name: "sonde_collector_export_points_total",
                kind: "counter",
                help: "Points InfluxDB accepted.",
                value: f(e.points_written),
            },
            Sample {
                name: "sonde_collector_export_rejected_points_total",
                kind: "counter",
                help: "Points InfluxDB refused for their content (logged, skipped).",
                value: f(e.points_rejected),
            },
            Sample {
                name: "sonde_collector_export_write_failures_total",
                kind: "counter",
                help: "Write attempts that failed and were retried.",
                value: f(e.write_failures),
            },
            Sample {
                name: "sonde_collector_export_failing",
                kind: "gauge",
                help: "1 while the last write attempt failed.",
                value: f(u64::from(e.failing)),
            },
            Sample {
                name: "sonde_collector_export_dropped_fields_total",
                kind: "counter",
                help: "Non-finite float fields left out of exported points.",
                value: f(e.fields_dropped),
            },
            Sample {
                name: "sonde_collector_export_undecodable_entries_total",
                kind: "counter",
                help: "Ingest-log entries that could not be decoded (not exported).",
                value: f(e.undecodable),
            },
        ]);
    }
    let n = &shared.alert.stats;
    samples.extend([
        Sample {
            name: "sonde_collector_alerts_firing",
            kind: "gauge",
            help: "Alerts firing now (all tenants).",
            value: f(n.firing.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_notifications_sent_total",
            kind: "counter",
            help: "Notifications a receiver accepted.",
            value: f(n.sent.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_notification_failures_total",
            kind: "counter",
            help: "Delivery attempts that failed (retried or given up).",
            value: f(n.failed_attempts.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_notifications_given_up_total",
            kind: "counter",
            help: "Notifications given up (refused, or undelivered past give-up-after).",
            value: f(n.given_up.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_receivers_failing",
            kind: "gauge",
            help: "Receiver integrations failing now (receiver-failing raised).",
            value: f(n.failing.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_deadman_pings_total",
            kind: "counter",
            help: "Dead-man's switch pings answered.",
            value: f(n.deadman_pings.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_deadman_failures_total",
            kind: "counter",
            help: "Dead-man's switch pings that failed.",
            value: f(n.deadman_failures.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_log_commits_total",
            kind: "counter",
            help: "Ingest-log transactions committed (group commit: many appends each).",
            value: f(shared.writer.stats.commits.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_log_appends_total",
            kind: "counter",
            help: "Batches and heartbeats appended to the ingest log (replays included).",
            value: f(shared.writer.stats.appends.load(Relaxed)),
        },
        Sample {
            name: "sonde_collector_log_disk_reads_total",
            kind: "counter",
            help: "Reads of ingest-log entries from disk (caught-up consumers read from memory).",
            value: f(shared.log.disk_reads()),
        },
    ]);
    let mut text = render(&samples, &consumers, i);
    render_checks(&shared.checks.stats, &shared.ping_refused, &mut text);
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// Heartbeat checks: how many are in each state, pings by kind, and what
/// the ping listener refused by reason (no tenant or check labels).
pub fn render_checks(
    stats: &crate::checks::monitor::Stats,
    refused: &crate::checks::ping::Refused,
    out: &mut String,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let name = "sonde_collector_checks";
    let _ = writeln!(
        out,
        "# HELP {name} Heartbeat checks by state now.\n# TYPE {name} gauge"
    );
    for (state, n) in crate::checks::monitor::STATES.iter().zip(&stats.states) {
        let label = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(out, "{name}{{state=\"{label}\"}} {}", n.load(Relaxed));
    }
    let name = "sonde_collector_check_pings_total";
    let _ = writeln!(
        out,
        "# HELP {name} Pings recorded, by kind.\n# TYPE {name} counter"
    );
    for (kind, n) in ["success", "start", "fail", "log"].iter().zip(&stats.pings) {
        let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", n.load(Relaxed));
    }
    let name = "sonde_collector_check_pings_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Pings answered without being recorded, by reason.\n# TYPE {name} counter"
    );
    for (reason, n) in [
        ("unknown", &stats.unknown),
        ("rate-limited", &stats.limited),
        ("source-limited", &refused.limited_source),
        ("malformed", &refused.malformed),
        ("too-large", &refused.too_large),
    ] {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.load(Relaxed));
    }
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
