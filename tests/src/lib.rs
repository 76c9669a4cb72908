//! Harness for sonde's end-to-end tests.
//!
//! The tests run the real `sonde-collector` and `sonde-agent` binaries (built
//! by `cargo build --workspace --bins`, which the README test command runs
//! first) on loopback, with certificates made at run time by `sonde-certs`.
//! Every process is killed and every temporary directory removed when its
//! handle drops, also when a test fails. Waits are bounded polls
//! ([`eventually`]), never fixed sleeps.

pub mod agent;
pub mod ledger;
pub mod load;
pub mod measure;
pub mod netns;
pub mod nspawn;
pub mod receivers;
pub mod star;
pub mod tmpfs;
pub mod victoria;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sonde_certs::{Issued, Pki};
use sonde_proto::{Identity, Role};
use tempfile::TempDir;

/// Path of a workspace binary next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!(
            "{} is not built: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
            path.display()
        )
    });
    // `cargo test` rebuilds the libraries but not the binaries: refuse to
    // test a binary older than the sources it is built from.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let own = match name {
        "sonde-agent" => "agent",
        "sonde-collector" => "collector",
        "sondectl" => "ctl",
        _ => "certs-dev",
    };
    // certs-dev is only a dev-dependency of the others.
    let newest = [own, "runtime", "proto"]
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    if let Some(src) = newest {
        assert!(
            built >= src,
            "{} is older than its sources: run `cargo build --workspace --bins` (scripts/test.sh does)",
            path.display()
        );
    }
    path
}

/// Newest modification time of any file below `dir` that goes into the
/// build (Rust and proto sources, manifests, build scripts; not the sample
/// configs).
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let built_from = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "proto" | "js" | "css" | "html" | "svg")
        ) || path.file_name().is_some_and(|n| n == "Cargo.toml");
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else if built_from {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(t);
    }
    newest
}

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn run_checked(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: cannot run: {e} (is the package that has it installed?)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand
/// it out again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`;
/// panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client certificate on disk.
#[derive(Debug, Clone)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A child process whose stderr goes to a log file; killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `args` and extra environment.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("create log file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log fd"))
            .stderr(file)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Self { child, log }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("kill");
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 15 s for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
            .expect("process did not exit within 15 s of SIGTERM")
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains every one of `needles` on one line;
    /// returns that line.
    pub async fn wait_log(&self, needles: &[&str], timeout: Duration) -> String {
        let what = format!("a log line of {} with {needles:?}", self.log.display());
        eventually(&what, timeout, || async {
            self.log_text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_owned)
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// A temporary world: a dev PKI and a port pair for one collector.
pub struct World {
    pub tmp: TempDir,
    pub pki: Pki,
    pub port: u16,
    pub health_port: u16,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("dir", &self.tmp.path())
            .finish_non_exhaustive()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A fresh PKI in a new temporary directory and two free ports.
    pub fn new() -> Self {
        // reqwest's plain-HTTP client (for /healthz) wants a process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::init(&tmp.path().join("pki"), &[]).expect("pki init");
        Self {
            tmp,
            pki,
            port: free_port(),
            health_port: free_port(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A valid client certificate, issued on first use.
    pub fn cert(&self, tenant: &str, role: Role, name: &str) -> Cert {
        let stem = format!("{tenant}-{role}-{name}");
        let existing = Cert {
            cert: self.pki.dir().join(format!("{stem}.pem")),
            key: self.pki.dir().join(format!("{stem}.key")),
        };
        if existing.cert.exists() {
            return existing;
        }
        let id = Identity::new(tenant, role, name).expect("identity");
        let w = self.pki.issue(&id, Some(&stem), 30).expect("issue");
        Cert {
            cert: w.cert,
            key: w.key,
        }
    }

    /// A fresh client certificate with its PKCS#12 bundle, as an operator
    /// imports it into a browser: (PEM pair, bundle path, its password).
    pub fn browser_cert(&self, tenant: &str, role: Role, name: &str) -> (Cert, PathBuf, String) {
        let id = Identity::new(tenant, role, name).expect("identity");
        let stem = format!("{tenant}-{role}-{name}-browser");
        let w = self.pki.issue(&id, Some(&stem), 30).expect("issue");
        (
            Cert {
                cert: w.cert,
                key: w.key,
            },
            w.p12,
            w.password,
        )
    }

    /// Writes an arbitrary issued certificate (expired, foreign, no SAN).
    pub fn write_cert(&self, stem: &str, issued: &Issued) -> Cert {
        let (cert, key) = issued.write(self.pki.dir(), stem).expect("write cert");
        Cert { cert, key }
    }

    /// Writes `collector.toml`; `tables` (TOML tables only) is appended.
    pub fn collector_config(&self, tables: &str) -> PathBuf {
        self.collector_config_with("", tables)
    }

    /// Writes `collector.toml` with top-level `keys` (`ping-listen = …`)
    /// and `tables` appended.
    pub fn collector_config_with(&self, keys: &str, tables: &str) -> PathBuf {
        let pki = self.pki.dir();
        // Each key on its own line; none: the lines stay where tests
        // that name a line number expect them.
        let keys: String = keys.lines().flat_map(|l| [l, "\n"]).collect();
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\nhealth-listen = \"127.0.0.1:{health}\"\n{keys}\
             state-dir = \"{state}\"\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\ncrl = [\"{crl}\"]\n{tables}\n",
            port = self.port,
            health = self.health_port,
            state = self.dir().join("collector-state").display(),
            ca = pki.join("ca.pem").display(),
            cert = pki.join("collector.pem").display(),
            key = pki.join("collector.key").display(),
            crl = pki.join("crl.pem").display(),
        );
        let path = self.dir().join("collector.toml");
        std::fs::write(&path, text).expect("write collector.toml");
        path
    }

    /// Starts the collector with `collector.toml` and waits for `/healthz`.
    pub async fn start_collector(&self, env: &[(&str, &str)]) -> Proc {
        self.start_collector_at(&bin("sonde-collector"), env).await
    }

    /// As [`Self::start_collector`], with the collector binary at
    /// `program` (a benchmark comparing two builds).
    pub async fn start_collector_at(&self, program: &Path, env: &[(&str, &str)]) -> Proc {
        let proc = self.daemon_at(program, "collector", env);
        let url = format!("http://127.0.0.1:{}/healthz", self.health_port);
        let client = reqwest::Client::new();
        eventually("collector /healthz", Duration::from_secs(20), || async {
            let r = client.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        proc
    }

    /// Starts the collector without waiting for it to serve (for a start
    /// that must fail).
    pub fn spawn_collector(&self) -> Proc {
        self.daemon("sonde-collector", "collector", &[])
    }

    /// Writes `agent-NAME.toml` for a certificate; `tables` is appended.
    pub fn agent_config(&self, name: &str, cert: &Cert, tables: &str) -> PathBuf {
        let text = format!(
            "collector = \"localhost:{port}\"\nstate-dir = \"{state}\"\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [reconnect]\ninitial = \"100ms\"\nmax = \"1s\"\n{tables}\n{public_ip}",
            public_ip = no_public_ip(tables),
            port = self.port,
            state = self.dir().join(format!("agent-{name}-state")).display(),
            ca = self.pki.dir().join("ca.pem").display(),
            cert = cert.cert.display(),
            key = cert.key.display(),
        );
        let path = self.dir().join(format!("agent-{name}.toml"));
        std::fs::write(&path, text).expect("write agent config");
        path
    }

    /// Starts an agent with `agent-NAME.toml`.
    pub fn start_agent(&self, name: &str, env: &[(&str, &str)]) -> Proc {
        self.daemon("sonde-agent", &format!("agent-{name}"), env)
    }

    /// Runs `program --config DIR/STEM.toml --log stderr`, logging to a
    /// fresh `DIR/STEM-N.log`.
    fn daemon(&self, program: &str, stem: &str, env: &[(&str, &str)]) -> Proc {
        self.daemon_at(&bin(program), stem, env)
    }

    fn daemon_at(&self, program: &Path, stem: &str, env: &[(&str, &str)]) -> Proc {
        let config = self.dir().join(format!("{stem}.toml"));
        let log = self.dir().join(format!("{stem}-{}.log", unique()));
        let config = config.to_str().expect("utf-8 path");
        Proc::spawn(program, &["--config", config, "--log", "stderr"], env, log)
    }

    /// The collector's `/metrics` text (health listener).
    pub async fn collector_metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.health_port))
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("collector /metrics")
            .text()
            .await
            .expect("collector /metrics body")
    }

    /// One sample of the collector's `/metrics`; panics when absent.
    pub async fn collector_metric(&self, name: &str) -> f64 {
        let text = self.collector_metrics().await;
        prom_value(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// An HTTPS API client presenting `cert` (or none).
    pub fn api(&self, cert: Option<&Cert>) -> Api {
        Api::new(&self.pki.dir().join("ca.pem"), cert, self.port)
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// An HTTPS client of the collector API with a given client certificate.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

/// A rustls client config trusting `ca`, presenting `cert` if given —
/// whatever it is: unlike the programs, a test client does not check its
/// own certificate (an expired one is presented as is).
pub fn client_tls(ca: &Path, cert: Option<&Cert>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in sonde_runtime::tls::load_certs(ca).expect("ca") {
        roots.add(c).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(sonde_runtime::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(Arc::new(roots));
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                sonde_runtime::tls::load_certs(&c.cert).expect("client certificate"),
                sonde_runtime::tls::load_key(&c.key).expect("client key"),
            )
            .expect("client certificate and key"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

impl Api {
    pub fn new(ca: &Path, cert: Option<&Cert>, port: u16) -> Self {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(client_tls(ca, cert))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        Self {
            client,
            base: format!("https://localhost:{port}"),
        }
    }

    /// A client of the collector listening at `addr` (inside a network
    /// namespace, say), still named `localhost` for its certificate; the
    /// name is mapped here, never looked up.
    pub fn via(ca: &Path, cert: Option<&Cert>, addr: std::net::SocketAddr) -> Self {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(client_tls(ca, cert))
            .resolve("localhost", addr)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        Self {
            client,
            base: format!("https://localhost:{}", addr.port()),
        }
    }

    /// GET `path`: status and JSON body (`null` when not JSON).
    pub async fn get(&self, path: &str) -> Result<(u16, serde_json::Value), reqwest::Error> {
        let (status, body) = self.raw(path).await?;
        Ok((
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// GET `path`: status and the raw body (no parsing).
    pub async fn raw(&self, path: &str) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.bytes().await?.to_vec()))
    }

    /// `method path` with a JSON body (`Content-Type: application/json`
    /// unless `headers` set another) and extra headers: status and JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(b);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.expect("API request");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("API body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The base URL (`https://localhost:PORT`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying client (streams, unusual requests).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET `path` expecting 200 and returning the JSON body.
    pub async fn ok(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await.expect("API request");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Opens `GET /api/v1/live` and reads its first event: the raw text
    /// (`event: …` and `data: …` lines) and the frame in it.
    pub async fn first_live_frame(&self) -> (String, serde_json::Value) {
        let mut live = self
            .client
            .get(format!("{}/api/v1/live", self.base))
            .send()
            .await
            .expect("live stream");
        assert_eq!(live.headers()["content-type"], "text/event-stream");
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), live.chunk())
                .await
                .expect("a frame within 5 s")
                .expect("stream readable")
                .expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line");
        let frame = serde_json::from_str(data).expect("frame JSON");
        (text, frame)
    }

    /// The agent entry `tenant/name` from `/api/v1/agents`, if listed.
    pub async fn agent(&self, tenant: &str, name: &str) -> Option<serde_json::Value> {
        let body = self.ok("/api/v1/agents").await;
        body["agents"]
            .as_array()?
            .iter()
            .find(|a| a["tenant"] == tenant && a["name"] == name)
            .cloned()
    }

    /// All events visible to this caller, oldest first.
    pub async fn events(&self) -> Vec<serde_json::Value> {
        let body = self.ok("/api/v1/events?limit=1000").await;
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

/// `(agent, kind)` pairs of events.
pub fn event_kinds(events: &[serde_json::Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["agent"].as_str().unwrap_or_default().to_owned(),
                e["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `[public-ip]` off unless `tables` configures it: its default sources
/// are on the internet, where no test may send.
pub fn no_public_ip(tables: &str) -> &'static str {
    if tables.contains("[public-ip]") || tables.contains("[[public-ip.source]]") {
        ""
    } else {
        "[public-ip]\nenabled = false\n"
    }
}

/// Wall-clock now in Unix milliseconds.
pub use sonde_runtime::clock::unix_millis as now_ms;

/// Writes a `sondectl` config for `cert` against the world's collector.
pub fn ctl_config(world: &World, name: &str, cert: &Cert) -> PathBuf {
    let path = world.dir().join(format!("sondectl-{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "collector = \"localhost:{port}\"\n[tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
            port = world.port,
            ca = world.pki.dir().join("ca.pem").display(),
            cert = cert.cert.display(),
            key = cert.key.display(),
        ),
    )
    .expect("write sondectl config");
    path
}

/// Runs `sondectl` with `config` and `args`.
pub async fn sondectl(config: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(bin("sondectl"))
        .env("SONDECTL_CONFIG", config)
        .args(args)
        .output()
        .await
        .expect("run sondectl")
}

/// Writes a secret (webhook URL, password, token) as the operator must:
/// mode 0600, owned by the user running the test.
pub fn write_secret(path: &Path, contents: impl AsRef<[u8]>) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_ref()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Runs `PROGRAM --config PATH check-config`: (success, stdout + stderr).
pub fn check_config(program: &str, config: &Path) -> (bool, String) {
    let out = std::process::Command::new(bin(program))
        .args([
            "--config",
            config.to_str().expect("utf-8 path"),
            "check-config",
        ])
        .output()
        .expect("run check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An mTLS gRPC channel to the world's collector presenting `cert`.
pub async fn grpc_channel(world: &World, cert: &Cert) -> tonic::transport::Channel {
    try_grpc_channel(world, cert)
        .await
        .expect("mTLS gRPC channel")
}

/// An mTLS gRPC channel to the collector presenting `cert`, or why not.
pub async fn try_grpc_channel(
    world: &World,
    cert: &Cert,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::ServerName;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    let mut tls = client_tls(&world.pki.dir().join("ca.pem"), Some(cert));
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = Arc::new(tls);
    let port = world.port;
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
                let name = ServerName::try_from("localhost").expect("name");
                let stream = TlsConnector::from(tls).connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// Opens `/api/v1/live` with `cert` on a connection of its own (HTTP/1.1)
/// and no request timeout (the API client's 10 s would end the stream
/// itself); read it with `chunk()`.
pub async fn live_stream(world: &World, cert: &Cert) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(&world.pki.dir().join("ca.pem"), Some(cert)))
        .build()
        .expect("client");
    client
        .get(format!("https://localhost:{}/api/v1/live", world.port))
        .send()
        .await
        .expect("live stream")
}

/// The value of sample `name` (with its labels, e.g. `x{a="b"}`) in
/// Prometheus text.
pub fn prom_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
