//! What the fuzz targets share: a real collector started once per fuzzing
//! process (its own PKI and state in a temporary directory, listening on
//! loopback only), whose router the targets call in-process with a
//! verified-peer extension, as the TLS listener would after a handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use prost::Message as _;
use sonde_certs::Pki;
use sonde_collector::Collector;
use sonde_collector::ingest::peer::Peer;
use sonde_proto::v1::agent_message::Kind;
use sonde_proto::v1::{AgentMessage, Hello, PingResult, PingStatus, Record, ResultBatch, record};
use sonde_proto::{Identity, Role};

/// A temporary directory for one fuzzing process: a PKI and a scratch
/// folder, in memory when `/dev/shm` is there (targets write on every run).
pub struct Workdir {
    /// CA, CRL, collector certificate and key.
    pub pki: PathBuf,
    /// Files a target writes.
    pub scratch: PathBuf,
    dir: tempfile::TempDir,
}

/// The process-wide work directory, made on first use.
pub fn workdir() -> &'static Workdir {
    static DIR: OnceLock<Workdir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let pki = dir.path().join("pki");
        Pki::init(&pki, &[]).expect("pki");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        Workdir { pki, scratch, dir }
    })
}

/// The collector every target in this process talks to.
pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub router: axum::Router,
    _collector: Collector,
}

/// Tenants and prefixes the collector is configured with.
const TABLES: &str = "[access]\noperator-tenants = [\"noc\"]\n\
[[tenant]]\nname = \"acme\"\nprefixes = [\"10.0.0.0/24\", \"10.0.1.0/24\", \"2001:db8::/64\"]\n\
[[tenant]]\nname = \"globex\"\nprefixes = [\"10.9.0.0/24\"]\n\
[limits]\nmessages-per-second = 100000\nmessage-burst = 100000\n";

/// Writes a collector configuration for `pki` with its state in `state`.
pub fn collector_config(dir: &Path, pki: &Path, state: &Path) -> PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate-dir = \"{state}\"\n\
         [tls]\nca = \"{pki}/ca.pem\"\ncert = \"{pki}/collector.pem\"\nkey = \"{pki}/collector.key\"\n\
         crl = [\"{pki}/crl.pem\"]\n{TABLES}",
        state = state.display(),
        pki = pki.display(),
    );
    let path = dir.join("collector.toml");
    std::fs::write(&path, text).expect("write collector.toml");
    path
}

/// The process-wide harness, started on first use.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let w = workdir();
        let path = collector_config(w.dir.path(), &w.pki, &w.dir.path().join("state"));
        let config = sonde_collector::Config::load(&path).expect("collector config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let collector = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .expect("bind loopback");
            Collector::start(config, listener, None)
                .await
                .expect("collector start")
        });
        let h = Harness {
            router: collector.router(),
            runtime,
            _collector: collector,
        };
        seed(&h);
        h
    })
}

/// A gRPC `AgentService/Session` call whose request stream is `messages`
/// (each already encoded; framed here as uncompressed gRPC messages).
pub fn session_request(peer: Peer, messages: &[Vec<u8>]) -> http::Request<axum::body::Body> {
    let mut body = Vec::new();
    for m in messages {
        body.push(0);
        body.extend_from_slice(&u32::try_from(m.len()).unwrap_or(u32::MAX).to_be_bytes());
        body.extend_from_slice(m);
    }
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/sonde.v1.AgentService/Session")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(axum::body::Body::from(body))
        .expect("request");
    request.extensions_mut().insert(peer);
    request
}

/// Sends `request` to the collector and reads the whole answer; streams
/// that never end (server-sent events) are dropped after their headers.
pub fn call(h: &Harness, request: http::Request<axum::body::Body>) -> (http::StatusCode, Vec<u8>) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    h.runtime.block_on(async {
        let response = h.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let streaming = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            return (status, Vec::new());
        }
        let body = response.into_body().collect().await.map_or_else(
            |e| format!("body error: {e}").into_bytes(),
            |b| b.to_bytes().to_vec(),
        );
        (status, body)
    })
}

/// An encoded `Hello` for spool `spool_id`.
pub fn hello(spool_id: u64) -> Vec<u8> {
    AgentMessage {
        kind: Some(Kind::Hello(Hello {
            agent_version: "0.1.0".into(),
            heartbeat_interval_ms: 10_000,
            instance_id: 1,
            spool_id,
            ..Hello::default()
        })),
    }
    .encode_to_vec()
}

/// An encoded batch of pings from acme's agent: `n` addresses of
/// `net`.0/24, every seventh lost, sent `age_s` seconds ago.
pub fn ping_batch(batch_seq: u64, net: &str, n: u8, age_s: i64) -> Vec<u8> {
    let now = sonde_runtime::clock::unix_nanos() - age_s * 1_000_000_000;
    let records = (1..=n)
        .map(|i| Record {
            kind: Some(record::Kind::Ping(PingResult {
                target: format!("{net}.0/24"),
                address: format!("{net}.{i}"),
                sent_unix_nanos: now,
                rtt_nanos: if i % 7 == 0 {
                    0
                } else {
                    1_000_000 * u64::from(i)
                },
                status: if i % 7 == 0 {
                    PingStatus::Timeout
                } else {
                    PingStatus::Ok
                } as i32,
                reply_ttl: 64,
                ..PingResult::default()
            })),
        })
        .collect();
    AgentMessage {
        kind: Some(Kind::Batch(ResultBatch {
            batch_seq,
            sealed_unix_nanos: now,
            records,
        })),
    }
    .encode_to_vec()
}

/// Gives the API something to answer with: a minute of acme's pings, of
/// its own prefix and of globex's (which globex does not trust acme for:
/// none of it may reach globex's viewer).
fn seed(h: &Harness) {
    let messages = vec![
        hello(1),
        ping_batch(1, "10.0.0", 20, 90),
        ping_batch(2, "10.0.0", 20, 30),
        ping_batch(3, "10.9.0", 20, 90),
        ping_batch(4, "10.9.0", 20, 30),
    ];
    let (status, _) = call(
        h,
        session_request(peer("acme", Role::Agent, "a1"), &messages),
    );
    assert_eq!(status, http::StatusCode::OK, "seeding session");
}

/// The verified peer a request comes from.
pub fn peer(tenant: &str, role: Role, name: &str) -> Peer {
    Peer {
        identity: Identity::new(tenant, role, name).expect("identity"),
        remote: SocketAddr::from(([127, 0, 0, 1], 40000)),
        serial: "01".to_owned(),
    }
}
