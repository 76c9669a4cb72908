//! `GET/PUT/DELETE /api/v1/agents/NAME/settings[?tenant=T]`: an agent's
//! heartbeat interval, grace and monitoring schedule, changed live
//! ([`crate::agent_settings`]). Reading needs a viewer or admin
//! certificate of the agent's tenant, changing its admin role; `PUT` takes
//! all three (`null` or absent: the config's value), `DELETE` goes back to
//! the config. The change is published before the answer: a connected
//! agent gets its new interval, and liveness its grace, at once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::{ApiError, Params, access, admin, parse_body};
use crate::Shared;
use crate::agent_settings::{self, Settings, SettingsRequest};
use crate::ingest::peer::Peer;
use crate::read::access::Access;
use crate::read::query;
use crate::store::{AgentKey, AgentRow};

/// Largest settings body.
pub(super) const MAX_SETTINGS_BODY: usize = 4 * 1024;

async fn agent_of(
    shared: &Shared,
    access: &Access,
    name: String,
    params: &HashMap<String, String>,
) -> Result<AgentRow, ApiError> {
    let p = Params::new(params, &["tenant"])?;
    let tenant = p.name("tenant")?;
    sonde_proto::identity::validate_component("agent name", &name).map_err(|e| {
        ApiError::BadParam {
            name: "name".to_owned(),
            reason: e.to_string(),
        }
    })?;
    let access = access.clone();
    Ok(shared
        .store
        .run(move |s| Ok(query::find_agent(s, &access, &name, tenant.as_deref())))
        .await??)
}

/// The interval the agent last used (what it asks for, as far as the
/// collector knows).
fn last_interval(row: &AgentRow) -> Option<std::time::Duration> {
    u64::try_from(row.heartbeat_interval_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis)
}

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The agent's settings, the config's defaults and what applies.
fn view(shared: &Shared, row: &AgentRow) -> Value {
    let key = AgentKey {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
    };
    let config = shared.settings.borrow().clone();
    let all = shared.agent_settings.borrow().clone();
    let own = all.get(&key);
    let requested = last_interval(row);
    let (i, g) = agent_settings::effective(&config, own, &key, requested);
    let (di, dg) = agent_settings::effective(&config, None, &key, requested);
    let schedule_of = |s: Option<&Settings>| {
        s.and_then(|s| s.schedule.clone()).or_else(|| {
            config
                .agent
                .iter()
                .find(|a| a.tenant == key.tenant && a.name == key.name)
                .and_then(|a| a.schedule.clone())
        })
    };
    json!({
        "tenant": key.tenant,
        "name": key.name,
        "settings": own,
        "defaults": { "heartbeat_interval": human(di), "grace": human(dg), "schedule": schedule_of(None) },
        "effective": { "heartbeat_interval": human(i), "grace": human(g), "schedule": schedule_of(own) },
    })
}

pub(super) async fn get(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let row = agent_of(&shared, &access, name, &params).await?;
    Ok(Json(view(&shared, &row)))
}

/// Stores and publishes `settings` of the agent of `row`; liveness gets
/// the new grace at once.
async fn apply(shared: &Shared, row: &AgentRow, settings: Settings) -> Result<(), ApiError> {
    let key = AgentKey {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
    };
    let (k, s) = (key.clone(), settings.clone());
    shared
        .store
        .run(move |st| agent_settings::save(st, &k, &s))
        .await?;
    let cleared = settings.heartbeat_interval.is_none()
        && settings.grace.is_none()
        && settings.schedule.is_none();
    shared.agent_settings.send_modify(|all| {
        let all = Arc::make_mut(all);
        if cleared {
            all.remove(&key);
        } else {
            all.insert(key.clone(), settings);
        }
    });
    let config = shared.settings.borrow().clone();
    let requested = last_interval(row);
    let own = shared.agent_settings.borrow().get(&key).cloned();
    let (_, grace) = agent_settings::effective(&config, own.as_ref(), &key, requested);
    shared.liveness.policy(key, grace).await;
    Ok(())
}

pub(super) async fn put(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let access = admin(&shared, &peer, "changing an agent's settings")?;
    let row = agent_of(&shared, &access, name, &params).await?;
    let req: SettingsRequest = parse_body(&body)?;
    let key = AgentKey {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
    };
    let config = shared.settings.borrow().clone();
    let mut settings = req
        .validate(&config, &key, last_interval(&row))
        .map_err(ApiError::BadBody)?;
    settings.author = peer.identity.to_string();
    settings.updated_ms = crate::store::now_ms();
    apply(&shared, &row, settings).await?;
    tracing::info!(agent = %key, by = %peer.identity, "agent settings changed");
    Ok(Json(view(&shared, &row)))
}

pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = admin(&shared, &peer, "changing an agent's settings")?;
    let row = agent_of(&shared, &access, name, &params).await?;
    apply(&shared, &row, Settings::default()).await?;
    tracing::info!(agent = %row.tenant, name = %row.name, by = %peer.identity, "agent settings back to the config");
    Ok(Json(view(&shared, &row)))
}

/// `GET /api/v1/agents/NAME/availability[?tenant=T]`: the last 24 h
/// minute by minute and the share of up time over 24 h, 7 d and 30 d
/// ([`crate::read::availability`]).
pub(super) async fn availability(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let row = agent_of(&shared, &access, name, &params).await?;
    let now = crate::store::now_ms();
    let v = shared
        .store
        .run(move |s| crate::read::availability::of_agent(s, &row.tenant, &row.name, now))
        .await?;
    Ok(Json(v))
}
