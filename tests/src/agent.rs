//! A sonde agent running inside the test process: the real session,
//! spool and batcher, fed records directly by the test instead of by the
//! probe engines (which feed the same channel).

use std::sync::Arc;
use std::time::Duration;

use sonde_agent::config::Loaded;
use sonde_agent::outbox::Outbox;
use sonde_agent::spool::Spool;
use sonde_agent::{AgentStatus, batcher};
use sonde_proto::Role;
use sonde_proto::v1::Record;
use sonde_runtime::probes::Probes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::World;

/// An agent running in this process.
pub struct Agent {
    records: Option<mpsc::Sender<Record>>,
    shutdown: CancellationToken,
    session: JoinHandle<()>,
    batcher: JoinHandle<()>,
    _config: watch::Sender<Arc<Loaded>>,
    _assigned: watch::Receiver<Arc<Probes>>,
}

impl Agent {
    /// Starts agent `name` of tenant `acme` with `agent-NAME.toml`
    /// (`tables` appended).
    pub fn start(world: &World, name: &str, tables: &str) -> Self {
        Self::start_in(world, "acme", name, tables)
    }

    /// Starts agent `name` of `tenant`.
    pub fn start_in(world: &World, tenant: &str, name: &str, tables: &str) -> Self {
        let cert = world.cert(tenant, Role::Agent, name);
        let path = world.agent_config(name, &cert, tables);
        let loaded = Loaded::load(&path).unwrap();
        let (spool, _) = Spool::open(
            &loaded.config.state_dir.join("spool"),
            loaded.spool_limits(),
        )
        .unwrap();
        let outbox = Outbox::new(spool);
        let (tx, rx) = mpsc::channel(100_000);
        let batcher = tokio::spawn(batcher::run(rx, outbox.clone(), loaded.batch_limits()));
        let (config_tx, config_rx) = watch::channel(Arc::new(loaded));
        let (status_tx, _) = watch::channel(AgentStatus::Starting);
        let shutdown = CancellationToken::new();
        let (assigned_tx, assigned_rx) = watch::channel(Arc::new(Probes::default()));
        let session = tokio::spawn(sonde_agent::run(
            config_rx,
            outbox,
            status_tx,
            assigned_tx,
            shutdown.clone(),
        ));
        Self {
            records: Some(tx),
            shutdown,
            session,
            batcher,
            _config: config_tx,
            _assigned: assigned_rx,
        }
    }

    /// Sends records as if probes had produced them, pausing briefly every
    /// 50 so batches form as they would live.
    pub async fn send(&self, records: impl IntoIterator<Item = Record>) {
        let tx = self.records.as_ref().expect("agent stopped");
        for (i, r) in records.into_iter().enumerate() {
            tx.send(r).await.expect("batcher gone");
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Stops the session, then flushes the batcher into the spool.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.session.await.unwrap();
        self.records.take();
        self.batcher.await.unwrap();
    }
}
