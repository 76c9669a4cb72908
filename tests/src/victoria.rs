//! A real VictoriaMetrics server (Debian's `victoria-metrics`) on loopback,
//! for the InfluxDB write path: it accepts `/api/v2/write` line protocol.
//! Facts the tests rely on: it answers 204 even for invalid lines and
//! counts them in `vm_rows_invalid_total{type="influx"}`; it keeps
//! millisecond timestamps; data becomes readable after
//! `/internal/force_flush`; `/api/v1/export` returns JSON lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Proc, eventually, free_port};

/// The server binary; `scripts/test.sh` installs the package.
pub const BIN: &str = "/usr/bin/victoria-metrics";

/// A running (or stopped) server with its data directory and port.
#[derive(Debug)]
pub struct Victoria {
    dir: PathBuf,
    pub port: u16,
    proc: Option<Proc>,
    http: reqwest::Client,
}

/// One exported series.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

impl Series {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).and_then(|v| v.as_str()).unwrap_or("")
    }
}

impl Victoria {
    /// Starts a server with its data under `dir`; fails loudly when the
    /// binary is missing.
    pub async fn start(dir: &Path) -> Self {
        assert!(
            Path::new(BIN).exists(),
            "{BIN} not found: install Debian's victoria-metrics (scripts/test.sh does)"
        );
        let mut v = Self {
            dir: dir.to_owned(),
            port: free_port(),
            proc: None,
            http: reqwest::Client::new(),
        };
        v.restart().await;
        v
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it again (same port, same data) and waits for `/ready`.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "already running");
        std::fs::create_dir_all(&self.dir).expect("victoria data dir");
        let args = [
            format!("-storageDataPath={}", self.dir.join("data").display()),
            format!("-httpListenAddr=127.0.0.1:{}", self.port),
            "-search.latencyOffset=0s".to_owned(),
            "-retentionPeriod=100y".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self
            .dir
            .join(format!("victoria-{}.log", std::process::id()));
        self.proc = Some(Proc::spawn(Path::new(BIN), &args, &[], log));
        let url = format!("{}/ready", self.url());
        eventually(
            "VictoriaMetrics /ready",
            Duration::from_secs(30),
            || async {
                let r = self.http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// Stops it (SIGTERM; it flushes on the way out).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }

    /// Makes everything written so far readable.
    pub async fn flush(&self) {
        let r = self
            .http
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .expect("force_flush");
        assert!(r.status().is_success(), "force_flush: {}", r.status());
    }

    /// Every series matching the series selector `selector`, with all
    /// samples.
    pub async fn export(&self, selector: &str) -> Vec<Series> {
        self.flush().await;
        let text = self
            .http
            .get(format!("{}/api/v1/export", self.url()))
            .query(&[("match[]", selector), ("start", "0")])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("export line");
                let nums = |k: &str| -> Vec<serde_json::Value> {
                    v[k].as_array().cloned().unwrap_or_default()
                };
                Series {
                    labels: v["metric"].as_object().cloned().unwrap_or_default(),
                    values: nums("values")
                        .iter()
                        .filter_map(serde_json::Value::as_f64)
                        .collect(),
                    timestamps: nums("timestamps")
                        .iter()
                        .filter_map(serde_json::Value::as_i64)
                        .collect(),
                }
            })
            .collect()
    }

    /// The value of one of its own metrics, e.g.
    /// `vm_rows_invalid_total{type="influx"}`.
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        crate::prom_value(&text, name_and_labels)
            .unwrap_or_else(|| panic!("VictoriaMetrics has no metric {name_and_labels}"))
    }
}
