//! The HTTP JSON API under `/api/v1/`, on the mTLS listener.
//!
//! Every handler derives the caller's scope from the certificate (the
//! [`Peer`] the listener attached): viewers and admins see their own tenant,
//! members of an operator tenant see all tenants, agents see nothing.
//! Errors are JSON `{"error": "..."}` with a status that says what kind of
//! mistake it was; query parameters are validated and unknown ones refused.

mod checks;
pub(crate) mod json_errors;
pub(crate) mod live;
mod settings;
mod targets;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::Shared;
use crate::ingest::peer::Peer;
use crate::observation::Probe;
use crate::read::access::{Access, RoleRefused};
use crate::read::query::{self, QueryError, TargetFilter};
use crate::store::{AgentRow, EventQuery, StoreError};

/// Largest page of events one request may ask for.
pub const MAX_EVENTS_LIMIT: u32 = 1000;
const DEFAULT_EVENTS_LIMIT: u32 = 100;

/// What can go wrong answering an API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Forbidden(#[from] RoleRefused),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("invalid query parameter {name:?}: {reason}")]
    BadParam { name: String, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("invalid request body: {0}")]
    BadBody(String),
    #[error("{0}")]
    Conflict(String),
    /// A tenant quota (`[[tenant]] max-…`) would be exceeded.
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    Busy(String),
    /// A per-caller limit (429).
    #[error("{0}")]
    TooMany(String),
    #[error("internal error")]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Forbidden(_)
            | ApiError::NotAllowed(_)
            | ApiError::Query(QueryError::PrefixForbidden(_) | QueryError::TenantForbidden(_)) => {
                StatusCode::FORBIDDEN
            }
            ApiError::Query(QueryError::Bad { .. })
            | ApiError::BadParam { .. }
            | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Query(QueryError::NoSeries(_) | QueryError::NoAgent(_))
            | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Quota(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Query(QueryError::Store(e)) | ApiError::Store(e) => {
                tracing::error!(error = %e, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        // Store errors name paths: never sent to the caller.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// The API routes (the listener adds the `Peer` extension). No fallback:
/// [`not_found`] serves both gRPC and HTTP once the routers are merged.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{name}", get(agent))
        .route(
            "/api/v1/agents/{name}/settings",
            get(settings::get)
                .put(settings::put)
                .delete(settings::delete)
                .layer(axum::extract::DefaultBodyLimit::max(
                    settings::MAX_SETTINGS_BODY,
                )),
        )
        .route("/api/v1/events", get(events))
        .route(
            "/api/v1/targets",
            get(targets)
                .post(targets::create)
                .layer(axum::extract::DefaultBodyLimit::max(
                    targets::MAX_TARGET_BODY,
                )),
        )
        .route("/api/v1/targets/definitions", get(targets::definitions))
        .route(
            "/api/v1/targets/{id}",
            get(targets::definition)
                .put(targets::replace)
                .delete(targets::remove)
                .layer(axum::extract::DefaultBodyLimit::max(
                    targets::MAX_TARGET_BODY,
                )),
        )
        .route(
            "/api/v1/checks",
            get(checks::list)
                .post(checks::create)
                .layer(axum::extract::DefaultBodyLimit::max(checks::MAX_CHECK_BODY)),
        )
        .route(
            "/api/v1/checks/ping-key",
            get(checks::ping_key).post(checks::new_ping_key),
        )
        .route(
            "/api/v1/checks/{id}",
            get(checks::one)
                .put(checks::replace)
                .delete(checks::remove)
                .layer(axum::extract::DefaultBodyLimit::max(checks::MAX_CHECK_BODY)),
        )
        .route("/api/v1/checks/{id}/pause", post(checks::pause))
        .route("/api/v1/checks/{id}/resume", post(checks::resume))
        .route("/api/v1/checks/{id}/rotate", post(checks::rotate))
        .route("/api/v1/checks/{id}/pings", get(checks::pings))
        .route(
            "/api/v1/checks/{id}/availability",
            get(checks::availability),
        )
        .route(
            "/api/v1/agents/{name}/availability",
            get(settings::availability),
        )
        .route("/api/v1/prefixes", get(prefixes))
        .route("/api/v1/prefixes/{prefix}", get(grid))
        .route("/api/v1/prefixes/{addr}/{len}", get(grid_split))
        .route("/api/v1/series/{agent}/{target}", get(series))
        .route("/api/v1/outages", get(outages))
        .route("/api/v1/live", get(live::live))
        .route("/api/v1/replay", get(live::replay))
        .route("/api/v1/status", get(status))
        .route("/api/v1/alerts", get(alerts))
        .route(
            "/api/v1/silences",
            get(silences)
                .post(add_silence)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_SILENCE_BODY)),
        )
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(expire_silence),
        )
        .with_state(shared)
}

/// Fallback for unknown paths: gRPC `UNIMPLEMENTED` for gRPC requests, a
/// JSON 404 for everything else.
pub(crate) async fn not_found(req: axum::extract::Request) -> Response {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unimplemented(format!("no such method {:?}", req.uri().path()))
            .into_http::<axum::body::Body>()
    } else {
        ApiError::NotFound(format!("{:?}", req.uri().path())).into_response()
    }
}

/// A JSON request body, or 400 naming what is wrong with it.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string()))
}

/// What the caller may see, or 403.
fn access(shared: &Shared, peer: &Peer) -> Result<Access, ApiError> {
    Access::of(&shared.settings.borrow(), &peer.identity).map_err(|e| {
        tracing::warn!(peer = %peer.identity, remote = %peer.remote, "API request refused: role may not view");
        ApiError::Forbidden(e)
    })
}

/// The caller as the collector sees it: what the web UI shows and which
/// controls it offers.
async fn whoami(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let id = &peer.identity;
    Ok(Json(json!({
        "identity": id.to_string(),
        "tenant": id.tenant,
        "role": id.role.as_str(),
        "name": id.name,
        "operator": access.all,
        "grants": access.grants().iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

async fn agents(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = access(&shared, &peer)?.scope();
    Params::new(&params, &[])?;
    let rows: Vec<AgentRow> = shared.store.run(move |s| s.agents(&scope)).await?;
    Ok(Json(json!({ "agents": rows })))
}

/// One agent with its host facts (`?tenant=` for operators when several
/// tenants have an agent of that name).
async fn agent(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["tenant"])?;
    sonde_proto::identity::validate_component("agent name", &name).map_err(|e| {
        ApiError::BadParam {
            name: "name".to_owned(),
            reason: e.to_string(),
        }
    })?;
    let tenant = p.name("tenant")?;
    let detail = shared
        .store
        .run(move |s| Ok(query::agent_detail(s, &access, &name, tenant.as_deref())))
        .await??;
    Ok(Json(detail))
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["after", "before", "limit", "agent"])?;
    let limit = u32::try_from(p.int(
        "limit",
        DEFAULT_EVENTS_LIMIT.into(),
        1,
        MAX_EVENTS_LIMIT.into(),
    )?)
    .unwrap_or(DEFAULT_EVENTS_LIMIT);
    let query = EventQuery {
        after_id: p.int("after", 0, 0, i64::MAX)?,
        // `before=0`: from the newest.
        before_id: p
            .get("before")
            .is_some()
            .then(|| p.int("before", 0, 0, i64::MAX))
            .transpose()?
            .map(|b| if b == 0 { i64::MAX } else { b }),
        limit,
        agent: p.name("agent")?,
        ..EventQuery::default()
    };
    let query_newest = query.before_id.is_some();
    let (rows, next) = shared
        .store
        .run(move |s| query::events(s, &access, query))
        .await?;
    let cursor = if query_newest {
        "next_before"
    } else {
        "next_after"
    };
    Ok(Json(json!({ "events": rows, cursor: next })))
}

/// Largest page of targets one request may ask for.
pub const MAX_TARGETS_LIMIT: i64 = 10_000;

async fn targets(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["agent", "probe", "prefix", "after", "limit"])?;
    let filter = TargetFilter {
        agent: p.name("agent")?,
        probe: p.probe("probe")?,
        prefix: p
            .get("prefix")
            .map(|raw| {
                raw.parse::<ipnet::IpNet>().map_err(|_| ApiError::BadParam {
                    name: "prefix".into(),
                    reason: format!("{raw:?} is not a CIDR prefix such as 10.1.2.0/24"),
                })
            })
            .transpose()?,
        after: p.int("after", 0, 0, i64::MAX)?,
        limit: usize::try_from(p.int("limit", 1000, 1, MAX_TARGETS_LIMIT)?).unwrap_or(1000),
    };
    let h = &shared.analysis;
    let now = h.clock.now_ns();
    let (rows, next) = query::targets(&h.read(), &access, &filter, now);
    Ok(Json(json!({ "targets": rows, "next_after": next })))
}

async fn prefixes(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let rows = query::prefixes(&shared.analysis.read(), &access);
    Ok(Json(json!({ "prefixes": rows })))
}

async fn grid(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(prefix): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    grid_of(&shared, &peer, &prefix, &params)
}

async fn grid_split(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path((addr, len)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    grid_of(&shared, &peer, &format!("{addr}/{len}"), &params)
}

fn grid_of(
    shared: &Shared,
    peer: &Peer,
    prefix: &str,
    params: &HashMap<String, String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(shared, peer)?;
    Params::new(params, &[])?;
    let prefix = query::parse_prefix(prefix)?;
    let h = &shared.analysis;
    let grid = query::grid(&h.read(), &access, prefix, h.clock.now_ns()).inspect_err(|e| {
        if matches!(e, QueryError::PrefixForbidden(_)) {
            tracing::warn!(peer = %peer.identity, %prefix, "prefix refused: not granted");
        }
    })?;
    Ok(Json(serde_json::to_value(grid).unwrap_or_default()))
}

async fn series(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path((agent, target)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["tenant", "probe", "from", "to", "step"])?;
    let step = match p.get("step").map(String::as_str) {
        None | Some("1m") => 1,
        Some("5m") => 5,
        Some("1h") => 60,
        Some(other) => {
            return Err(ApiError::BadParam {
                name: "step".into(),
                reason: format!("{other:?} is not 1m, 5m or 1h"),
            });
        }
    };
    let tenant = p.name("tenant")?.unwrap_or_else(|| access.tenant.clone());
    let probe = p.probe("probe")?;
    let now_ms = shared.analysis.clock.now_ns() / 1_000_000;
    let given = |name| {
        p.get(name)
            .is_some()
            .then(|| p.int(name, 0, 0, i64::MAX))
            .transpose()
    };
    let (from, to) = query::range(given("from")?, given("to")?, now_ms)?;
    let found = query::find_series(
        &shared.analysis.read(),
        &access,
        &tenant,
        &agent,
        &target,
        probe,
    )?;
    let view = query_view(&found, shared.analysis.clock.now_ns());
    let history = shared
        .store
        .run(move |s| query::history(s, &found, from, to, step))
        .await?;
    Ok(Json(json!({
        "series": view,
        "from_ms": from,
        "to_ms": to,
        "step_ms": step * 60_000,
        "minutes": history,
    })))
}

fn query_view(s: &crate::consumers::analysis::series::Series, now: i64) -> serde_json::Value {
    json!({
        "id": s.id,
        "tenant": s.key.tenant,
        "agent": s.key.agent,
        "probe": s.key.probe,
        "target": s.key.target,
        "address": s.address.map(|a| a.to_string()),
        "averages": s.averages(now),
        "timeline": s.timeline(now),
        "outage": s.outage.open(),
        "route": s.route.path(),
    })
}

async fn outages(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["open", "limit"])?;
    let open = p.bool("open")?;
    let limit = u32::try_from(p.int("limit", 100, 1, MAX_EVENTS_LIMIT.into())?).unwrap_or(100);
    let rows = shared
        .store
        .run(move |s| query::outages(s, &access, open, limit))
        .await?;
    Ok(Json(json!({ "outages": rows })))
}

async fn status(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let export = shared.export.clone();
    let position = shared
        .analysis
        .stats
        .position
        .load(std::sync::atomic::Ordering::Relaxed);
    let (export, analysis_lag) = shared
        .store
        .run(move |s| {
            let export = export.map(|h| h.status(s)).transpose()?;
            Ok((
                export,
                crate::log::SqliteLog::new(s.clone()).lag_now(position)?,
            ))
        })
        .await?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connected_agents": shared.sessions.connected(),
        "export": export,
        "analysis": { "lag": analysis_lag },
    })))
}

/// Largest silence request body.
const MAX_SILENCE_BODY: usize = 64 * 1024;
/// How far back resolved alerts and ended silences are listed by default
/// (and at most).
const DEFAULT_HISTORY: std::time::Duration = std::time::Duration::from_secs(86_400);
const MAX_HISTORY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl Params<'_> {
    /// A duration parameter (`24h`), at most `MAX_HISTORY`.
    fn history(&self) -> Result<i64, ApiError> {
        let d = match self.get("history") {
            None => DEFAULT_HISTORY,
            Some(raw) => humantime::parse_duration(raw)
                .ok()
                .filter(|d| *d <= MAX_HISTORY)
                .ok_or_else(|| ApiError::BadParam {
                    name: "history".into(),
                    reason: format!("{raw:?} is not a duration up to 7d (e.g. 24h)"),
                })?,
        };
        Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

async fn alerts(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["status", "history"])?;
    let history = p.history()?;
    let only = p
        .get("status")
        .map(|s| {
            crate::consumers::alert::view::parse_status(s).ok_or_else(|| ApiError::BadParam {
                name: "status".into(),
                reason: format!(
                    "{s:?} is not pending, firing, deferred, silenced, suppressed, flapping or resolved"
                ),
            })
        })
        .transpose()?;
    let now = shared.alert.clock.now_ms();
    let v = shared
        .store
        .run(move |s| crate::consumers::alert::view::alerts(s, &access, now, history, only))
        .await?;
    Ok(Json(v))
}

async fn silences(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let history = Params::new(&params, &["history"])?.history()?;
    let now = shared.alert.clock.now_ms();
    let v = shared
        .store
        .run(move |s| crate::consumers::alert::view::silences(s, &access, now, history))
        .await?;
    Ok(Json(v))
}

/// The caller's access, when it may change its tenant's alerting.
fn admin(shared: &Shared, peer: &Peer, what: &str) -> Result<Access, ApiError> {
    let access = access(shared, peer)?;
    if peer.identity.role != sonde_proto::Role::Admin {
        tracing::warn!(peer = %peer.identity, "refused: {what} needs the admin role");
        return Err(ApiError::NotAllowed(format!(
            "{what} needs a certificate with the admin role of the tenant (this one is {})",
            peer.identity.role.as_str()
        )));
    }
    Ok(access)
}

async fn add_silence(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let access = admin(&shared, &peer, "creating a silence")?;
    Params::new(&params, &[])?;
    let new: crate::consumers::alert::silence::NewSilence = parse_body(&body)?;
    let tenant = match (&new.tenant, access.all) {
        (Some(t), true) => Some(t.clone()),
        (None, true) => None,
        (Some(t), false) if *t != access.tenant => {
            return Err(ApiError::NotAllowed(format!(
                "a silence may only cover your own tenant ({}), not {t:?}",
                access.tenant
            )));
        }
        (_, false) => Some(access.tenant.clone()),
    };
    let now = shared.alert.clock.now_ms();
    let silence = new
        .build(tenant, peer.identity.to_string(), now)
        .map_err(ApiError::BadBody)?;
    let silence = shared
        .store
        .run(move |s| crate::consumers::alert::state::add_silence(s, silence))
        .await?;
    tracing::info!(id = silence.id, author = %silence.author, matchers = ?silence.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(), "silence created");
    shared.alert.silences_changed();
    Ok((
        StatusCode::CREATED,
        Json(crate::consumers::alert::view::silence(&silence, now)),
    ))
}

async fn expire_silence(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = admin(&shared, &peer, "expiring a silence")?;
    Params::new(&params, &[])?;
    let id: i64 = id.parse().map_err(|_| ApiError::BadParam {
        name: "id".into(),
        reason: format!("{id:?} is not a silence id"),
    })?;
    let found = shared
        .store
        .run(move |s| crate::consumers::alert::state::silence(s, id))
        .await?;
    if found
        .as_ref()
        .is_some_and(|s| s.tenant.is_none() && !access.all)
    {
        return Err(ApiError::NotAllowed(format!(
            "silence {id} covers every tenant: only an operator tenant's admin may expire it"
        )));
    }
    let visible = found
        .as_ref()
        .filter(|s| access.all || s.tenant.as_deref() == Some(access.tenant.as_str()));
    if visible.is_none() {
        // Another tenant's silence is not revealed.
        return Err(ApiError::NotFound(format!("silence {id}")));
    }
    let (by, now) = (peer.identity.to_string(), shared.alert.clock.now_ms());
    let expired = shared
        .store
        .run(move |s| crate::consumers::alert::state::expire_silence(s, id, &by, now))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("silence {id}")))?;
    tracing::info!(id, by = %peer.identity, "silence expired");
    shared.alert.silences_changed();
    Ok(Json(crate::consumers::alert::view::silence(&expired, now)))
}

/// Validated access to query parameters.
struct Params<'a>(&'a HashMap<String, String>);

impl<'a> Params<'a> {
    fn new(params: &'a HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
            let reason = if allowed.is_empty() {
                "this endpoint takes no parameters".to_owned()
            } else {
                format!("unknown parameter; allowed: {}", allowed.join(", "))
            };
            return Err(ApiError::BadParam {
                name: unknown.clone(),
                reason,
            });
        }
        Ok(Self(params))
    }

    fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(default);
        };
        let bad = |reason: String| ApiError::BadParam {
            name: name.to_owned(),
            reason,
        };
        let v: i64 = raw
            .parse()
            .map_err(|_| bad(format!("{raw:?} is not an integer")))?;
        if v < min || v > max {
            return Err(bad(format!("{v} is outside {min}..={max}")));
        }
        Ok(v)
    }

    fn get(&self, name: &str) -> Option<&String> {
        self.0.get(name)
    }

    fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(other) => Err(ApiError::BadParam {
                name: name.to_owned(),
                reason: format!("{other:?} is not true or false"),
            }),
        }
    }

    fn probe(&self, name: &str) -> Result<Option<Probe>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                Probe::parse(v).ok_or_else(|| ApiError::BadParam {
                    name: name.to_owned(),
                    reason: format!("{v:?} is not ping, tcp or trace"),
                })
            })
            .transpose()
    }

    fn name(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                sonde_proto::identity::validate_component("agent name", v)
                    .map(|()| v.clone())
                    .map_err(|e| ApiError::BadParam {
                        name: name.to_owned(),
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }
}

/// The unauthenticated health router: `/healthz` only, no tenant data.
pub(crate) fn health_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::handler))
        .with_state(shared)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let healthy = shared.healthy(std::time::Duration::from_secs(2)).await;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "version": env!("CARGO_PKG_VERSION"),
        })),
    )
}
