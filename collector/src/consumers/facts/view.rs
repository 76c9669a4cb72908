//! What `GET /api/v1/agents/{name}` adds to an agent: its public-IP
//! history and latest lookups, listening ports, remote-check results and
//! latest system metrics.

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use sonde_proto::v1::{ListeningPorts, PublicIpResult, RemoteCheckResult, SystemMetrics};

use super::{IP_CHECK, METRICS, PORTS, REMOTE, REMOTE_FAILED, json as j};
use crate::store::{AgentKey, Store, StoreError};

/// Public-IP history entries returned per family at most.
pub const HISTORY_MAX: u32 = 100;

fn facts(c: &Connection, agent: &AgentKey, kind: &str) -> rusqlite::Result<Vec<Vec<u8>>> {
    let mut stmt = c.prepare(
        "SELECT body FROM host_facts WHERE tenant = ?1 AND agent = ?2 AND kind = ?3 ORDER BY key",
    )?;
    let rows = stmt.query_map(params![agent.tenant, agent.name, kind], |r| r.get(0))?;
    rows.collect()
}

fn decoded<M: prost::Message + Default>(bodies: &[Vec<u8>], f: fn(&M) -> Value) -> Vec<Value> {
    bodies
        .iter()
        .filter_map(|b| M::decode(b.as_slice()).ok())
        .map(|m| f(&m))
        .collect()
}

/// The facts of `agent` (which the caller may see).
pub fn facts_of(store: &Store, agent: &AgentKey) -> Result<Value, StoreError> {
    store.with_read(|c| {
        let mut history = c.prepare(
            "SELECT family, address, first_ns, last_ns FROM public_ips
             WHERE tenant = ?1 AND agent = ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        let history: Vec<Value> = history
            .query_map(params![agent.tenant, agent.name, HISTORY_MAX * 2], |r| {
                Ok(json!({
                    "family": r.get::<_, String>(0)?,
                    "address": r.get::<_, String>(1)?,
                    "first_seen_ms": super::ms(r.get(2)?),
                    "last_seen_ms": super::ms(r.get(3)?),
                }))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let current = |family: &str| {
            history
                .iter()
                .find(|h| h["family"] == family)
                .map(|h| h["address"].clone())
        };
        let public_ip = json!({
            "ipv4": current("ipv4"),
            "ipv6": current("ipv6"),
            "history": history,
            "lookups": decoded::<PublicIpResult>(&facts(c, agent, IP_CHECK)?, j::public_ip),
        });
        let ports = decoded::<ListeningPorts>(&facts(c, agent, PORTS)?, j::ports)
            .pop()
            .unwrap_or(Value::Null);
        let mut remote = decoded::<RemoteCheckResult>(&facts(c, agent, REMOTE)?, j::remote);
        remote.extend(decoded::<RemoteCheckResult>(
            &facts(c, agent, REMOTE_FAILED)?,
            j::remote,
        ));
        let metrics = decoded::<SystemMetrics>(&facts(c, agent, METRICS)?, j::metrics)
            .pop()
            .unwrap_or(Value::Null);
        Ok(json!({
            "public_ip": public_ip,
            "ports": ports,
            "remote_checks": remote,
            "metrics": metrics,
        }))
    })
}
