//! `GET /api/v1/targets/definitions`, `POST /api/v1/targets`,
//! `GET/PUT/DELETE /api/v1/targets/{id}`: the HTTP side of
//! [`crate::targets`]. Reading needs a viewer or admin certificate,
//! changing needs the admin role of the definition's tenant. Every change
//! is published to the agent sessions before the response is sent.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::json;

use super::{ApiError, Params, access, admin, parse_body};
use crate::Shared;
use crate::ingest::peer::Peer;
use crate::read::access::Access;
use crate::store::Scope;
use crate::targets::{self, Change, ChangeError, Context, ManagedTarget, TargetRequest};

/// Largest definition body.
pub(super) const MAX_TARGET_BODY: usize = 16 * 1024;

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NameTaken { .. } => ApiError::Conflict(e.to_string()),
            ChangeError::NotFound(id) => ApiError::NotFound(format!("target definition {id}")),
            ChangeError::Store(e) => ApiError::Store(e),
        }
    }
}

/// Reloads every definition and hands them to the sessions.
async fn publish(shared: &Shared) -> Result<(), ApiError> {
    let all = shared.store.run(targets::load).await?;
    shared.targets.send_replace(Arc::new(all));
    Ok(())
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::BadParam {
        name: "id".into(),
        reason: format!("{raw:?} is not a target definition id"),
    })
}

/// The definition `id` if the caller sees its tenant (another tenant's
/// reads as absent).
async fn visible(shared: &Shared, access: &Access, id: i64) -> Result<ManagedTarget, ApiError> {
    shared
        .store
        .run(move |s| targets::get(s, id))
        .await?
        .filter(|t| access.sees_tenant(&t.tenant))
        .ok_or_else(|| ApiError::NotFound(format!("target definition {id}")))
}

/// How long the collector waits for its resolver.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Every address the collector's resolver (the system's: `/etc/hosts`,
/// then DNS) gives for `host`.
async fn resolve(host: &str) -> Result<Vec<std::net::IpAddr>, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => {
            let mut out: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
            out.sort_unstable();
            out.dedup();
            Ok(out)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", RESOLVE_TIMEOUT.as_secs())),
    }
}

/// What `tenant` uses of its quotas besides the definition `replacing`:
/// its other definitions, and its agents' live series less the ones that
/// definition makes.
fn usage(
    shared: &Shared,
    tenant: &str,
    replacing: Option<&ManagedTarget>,
    agents: usize,
) -> targets::Usage {
    let definitions = shared
        .targets
        .borrow()
        .iter()
        .filter(|t| t.tenant == tenant && replacing.is_none_or(|r| r.id != t.id))
        .count();
    let live = shared.analysis.read().count_of(tenant);
    let own = replacing.map_or(0, |r| {
        let n = if r.spec.agents.is_empty() {
            agents
        } else {
            r.spec.agents.len()
        };
        r.spec.addresses().saturating_mul(n)
    });
    targets::Usage {
        definitions,
        series: live.saturating_sub(own),
        agents,
    }
}

/// Validates a request for `tenant` against its agents and grants; gives
/// the change to write, by `peer`.
async fn validate(
    shared: &Shared,
    access: &Access,
    peer: &Peer,
    tenant: &str,
    req: &TargetRequest,
    replacing: Option<&ManagedTarget>,
) -> Result<Change, ApiError> {
    let scope = Scope::Tenant(tenant.to_owned());
    let agents: BTreeSet<String> = shared
        .store
        .run(move |s| s.agents(&scope))
        .await?
        .into_iter()
        .map(|a| a.name)
        .collect();
    // An operator defining a target for another tenant is held to that
    // tenant's grants: its viewers must be able to see the results.
    let config = shared.settings.borrow().clone();
    let owner = if access.all && tenant != access.tenant {
        Access::of_tenant(config.tenancy(), tenant)
    } else {
        access.clone()
    };
    let resolved = match req.target.parse::<sonde_runtime::target::Target>() {
        Ok(sonde_runtime::target::Target::Host(h)) if !owner.all => Some(resolve(&h).await),
        _ => None,
    };
    let cx = Context {
        access: &owner,
        agents: &agents,
        max_retention: config.retention.aggregates,
        resolved: resolved.as_ref(),
    };
    let (name, spec) = req.validate(&cx).map_err(ApiError::BadBody)?;
    let used = usage(shared, tenant, replacing, agents.len());
    targets::check_quota(&spec, &config.quotas(tenant), used).map_err(ApiError::Quota)?;
    Ok(Change {
        name,
        spec,
        enabled: req.enabled,
        author: peer.identity.to_string(),
        at_ms: crate::store::now_ms(),
    })
}

pub(super) async fn definitions(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let defs: Vec<ManagedTarget> = shared
        .targets
        .borrow()
        .iter()
        .filter(|t| access.sees_tenant(&t.tenant))
        .cloned()
        .collect();
    let scope = access.scope();
    let agents: Vec<serde_json::Value> = shared
        .store
        .run(move |s| s.agents(&scope))
        .await?
        .into_iter()
        .map(|a| json!({ "tenant": a.tenant, "name": a.name }))
        .collect();
    let may_edit = peer.identity.role == sonde_proto::Role::Admin;
    Ok(Json(
        json!({ "definitions": defs, "agents": agents, "may_edit": may_edit }),
    ))
}

pub(super) async fn definition(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let t = visible(&shared, &access, parse_id(&id)?).await?;
    Ok(Json(serde_json::to_value(t).unwrap_or_default()))
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let access = admin(&shared, &peer, "adding a target")?;
    Params::new(&params, &[])?;
    let req: TargetRequest = parse_body(&body)?;
    let tenant = req.tenant_for(&access).map_err(ApiError::NotAllowed)?;
    let change = validate(&shared, &access, &peer, &tenant, &req, None).await?;
    let t = shared
        .store
        .run(move |s| Ok(targets::insert(s, &tenant, &change)))
        .await??;
    publish(&shared).await?;
    tracing::info!(id = t.id, tenant = %t.tenant, name = %t.name, target = %t.spec.target, kind = t.spec.kind.as_str(), by = %peer.identity, "target added");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(t).unwrap_or_default()),
    ))
}

pub(super) async fn replace(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = admin(&shared, &peer, "changing a target")?;
    Params::new(&params, &[])?;
    let id = parse_id(&id)?;
    let before = visible(&shared, &access, id).await?;
    let req: TargetRequest = parse_body(&body)?;
    if req.tenant.as_ref().is_some_and(|t| *t != before.tenant) {
        return Err(ApiError::BadBody(format!(
            "tenant: a definition cannot move to another tenant (it belongs to {})",
            before.tenant
        )));
    }
    let change = validate(&shared, &access, &peer, &before.tenant, &req, Some(&before)).await?;
    let t = shared
        .store
        .run(move |s| Ok(targets::update(s, id, &change)))
        .await??;
    publish(&shared).await?;
    tracing::info!(id, tenant = %t.tenant, name = %t.name, enabled = t.enabled, by = %peer.identity, "target changed");
    Ok(Json(serde_json::to_value(t).unwrap_or_default()))
}

pub(super) async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let access = admin(&shared, &peer, "deleting a target")?;
    Params::new(&params, &[])?;
    let id = parse_id(&id)?;
    let before = visible(&shared, &access, id).await?;
    shared
        .store
        .run(move |s| Ok(targets::delete(s, id)))
        .await??;
    publish(&shared).await?;
    tracing::info!(id, tenant = %before.tenant, name = %before.name, by = %peer.identity, "target deleted");
    Ok(StatusCode::NO_CONTENT)
}
