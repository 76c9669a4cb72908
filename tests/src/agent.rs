//! A sonde agent running inside the test process: the real session,
//! spool and batcher (`sonde_agent::Agent`), fed records directly by the
//! test instead of by the probe engines (which feed the same channel).

use std::time::Duration;

use sonde_agent::Feed;
use sonde_agent::config::Loaded;
use sonde_proto::Role;
use sonde_proto::v1::Record;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::World;

/// An agent running in this process.
pub struct Agent {
    records: mpsc::Sender<Record>,
    stop: tokio::sync::oneshot::Sender<()>,
    running: JoinHandle<()>,
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
        let mut agent = sonde_agent::Agent::start_with(loaded, Feed::External).unwrap();
        let records = agent.records();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        // The agent's work runs in a task of its own here (the daemon
        // polls it in its watchdog loop instead).
        let running = tokio::spawn(async move {
            tokio::select! {
                () = agent.work() => {}
                _ = stopped => {}
            }
            agent.shutdown().await;
        });
        Self {
            records,
            stop,
            running,
        }
    }

    /// Sends records as if probes had produced them, pausing briefly every
    /// 50 so batches form as they would live.
    pub async fn send(&self, records: impl IntoIterator<Item = Record>) {
        for (i, r) in records.into_iter().enumerate() {
            self.records.send(r).await.expect("batcher gone");
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Stops the session, then flushes the batcher into the spool.
    pub async fn stop(self) {
        let Self {
            records,
            stop,
            running,
        } = self;
        drop(records);
        let _ = stop.send(());
        running.await.unwrap();
    }
}
