//! `/api/v1/checks`: the HTTP side of [`crate::checks`]. Reading needs a
//! viewer or admin certificate, changing needs the admin role of the
//! check's tenant; another tenant's check reads as absent. Every change
//! reaches the monitor before the response is sent, so a rotated token is
//! refused by the ping listener from the moment the new one is shown.
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET /api/v1/checks` | list, with the state now |
//! | `POST /api/v1/checks` | create; the answer holds the token, once |
//! | `GET/PUT/DELETE /api/v1/checks/ID` | one check |
//! | `POST /api/v1/checks/ID/pause`, `/resume` | pause, resume |
//! | `POST /api/v1/checks/ID/rotate` | a new token (the old one stops at once), shown once |
//! | `GET /api/v1/checks/ID/pings` | the ping log, newest first |
//! | `GET /api/v1/checks/ID/availability` | the last 24 h by minute, up-time share over 24 h / 7 d / 30 d |
//! | `GET/POST /api/v1/checks/ping-key` | whether the tenant has a ping key / a new one, shown once |

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::{ApiError, Params, access, admin, parse_body};
use crate::Shared;
use crate::checks::define::CheckRequest;
use crate::checks::store::{self as checks_store, Change, ChangeError, Check};
use crate::checks::token;
use crate::ingest::peer::Peer;
use crate::read::access::Access;

/// Largest definition body.
pub(super) const MAX_CHECK_BODY: usize = 16 * 1024;
/// Largest page of pings.
const MAX_PINGS: i64 = 1000;

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Taken { .. } => ApiError::Conflict(e.to_string()),
            ChangeError::NotFound(id) => ApiError::NotFound(format!("check {id}")),
            ChangeError::Store(e) => ApiError::Store(e),
        }
    }
}

fn stopped(_: crate::checks::monitor::Stopped) -> ApiError {
    ApiError::Busy("the checks monitor is not running (the collector is stopping)".into())
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::BadParam {
        name: "id".into(),
        reason: format!("{raw:?} is not a check id"),
    })
}

/// Check `id` if the caller sees its tenant (another tenant's reads as
/// absent).
async fn visible(shared: &Shared, access: &Access, id: i64) -> Result<Check, ApiError> {
    shared
        .store
        .run(move |s| checks_store::get(s, id))
        .await?
        .filter(|c| access.sees_tenant(&c.tenant))
        .ok_or_else(|| ApiError::NotFound(format!("check {id}")))
}

/// The host the caller used for the API (`Host`, or the HTTP/2
/// authority), without its port.
fn caller_host(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    let raw = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(http::uri::Authority::as_str))?;
    // `[::1]:7443` → `[::1]`, `name:7443` → `name`
    Some(match raw.rfind(':') {
        Some(i) if !raw[i..].contains(']') => raw[..i].to_owned(),
        _ => raw.to_owned(),
    })
}

/// Where pings go, as a client reaches them: the host the caller used
/// for the API, on the ping listener's port.
fn ping_base(shared: &Shared, host: Option<&str>) -> Option<String> {
    let c = shared.settings.borrow();
    let port = c.ping_listen?.port();
    let scheme = if c.ping_tls { "https" } else { "http" };
    Some(format!("{scheme}://{}:{port}", host.unwrap_or("localhost")))
}

/// A check as the API shows it: as stored, with its state now.
fn view(shared: &Shared, c: &Check) -> Value {
    let config = shared.settings.borrow().clone();
    let now = crate::store::now_ms();
    let verdict = c.spec.expectation(&config).judge(&c.received(), now);
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["state"] = json!(verdict.state);
    v["expected_ms"] = json!(verdict.expected_ms);
    v["changes_ms"] = json!(verdict.until_ms);
    v
}

/// The answer that shows a token, once.
fn with_token(shared: &Shared, host: Option<&str>, c: &Check, token: &str) -> Value {
    let mut v = json!({ "check": view(shared, c), "token": token });
    if let Some(base) = ping_base(shared, host) {
        v["ping_url"] = json!(format!("{base}/ping/{token}"));
    }
    v
}

fn change(shared: &Shared, peer: &Peer, req: &CheckRequest) -> Result<Change, ApiError> {
    let config = shared.settings.borrow().clone();
    let (name, slug, spec) = req.validate(&config).map_err(ApiError::BadBody)?;
    Ok(Change {
        name,
        slug,
        spec,
        author: peer.identity.to_string(),
        at_ms: crate::store::now_ms(),
    })
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let scope = access.scope();
    let all = shared
        .store
        .run(move |s| checks_store::list(s, &scope))
        .await?;
    let checks: Vec<Value> = all.iter().map(|c| view(&shared, c)).collect();
    let may_edit = peer.identity.role == sonde_proto::Role::Admin;
    Ok(Json(json!({ "checks": checks, "may_edit": may_edit })))
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let c = visible(&shared, &access, parse_id(&id)?).await?;
    Ok(Json(view(&shared, &c)))
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: http::Uri,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let access = admin(&shared, &peer, "adding a check")?;
    Params::new(&params, &[])?;
    let req: CheckRequest = parse_body(&body)?;
    let tenant = access
        .owner(req.tenant.as_deref(), "checks")
        .map_err(ApiError::NotAllowed)?;
    let ch = change(&shared, &peer, &req)?;
    let token = token::new_token();
    let hash = token::hash(&token);
    let c = shared
        .store
        .run(move |s| Ok(checks_store::insert(s, &tenant, &ch, &hash)))
        .await??;
    shared.checks.reload(c.id).await.map_err(stopped)?;
    tracing::info!(id = c.id, tenant = %c.tenant, name = %c.name, by = %peer.identity, "check added");
    Ok((
        StatusCode::CREATED,
        Json(with_token(
            &shared,
            caller_host(&headers, &uri).as_deref(),
            &c,
            &token,
        )),
    ))
}

pub(super) async fn replace(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let access = admin(&shared, &peer, "changing a check")?;
    Params::new(&params, &[])?;
    let id = parse_id(&id)?;
    let before = visible(&shared, &access, id).await?;
    let req: CheckRequest = parse_body(&body)?;
    if req.tenant.as_ref().is_some_and(|t| *t != before.tenant) {
        return Err(ApiError::BadBody(format!(
            "tenant: a check cannot move to another tenant (it belongs to {})",
            before.tenant
        )));
    }
    let ch = change(&shared, &peer, &req)?;
    let c = shared
        .store
        .run(move |s| Ok(checks_store::update(s, id, &ch)))
        .await??;
    shared.checks.reload(id).await.map_err(stopped)?;
    tracing::info!(id, tenant = %c.tenant, name = %c.name, by = %peer.identity, "check changed");
    Ok(Json(view(&shared, &c)))
}

pub(super) async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let access = admin(&shared, &peer, "deleting a check")?;
    Params::new(&params, &[])?;
    let id = parse_id(&id)?;
    let before = visible(&shared, &access, id).await?;
    shared
        .store
        .run(move |s| Ok(checks_store::delete(s, id)))
        .await??;
    shared.checks.reload(id).await.map_err(stopped)?;
    tracing::info!(id, tenant = %before.tenant, name = %before.name, by = %peer.identity, "check deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn pause_or_resume(
    shared: &Shared,
    peer: &Peer,
    id: &str,
    params: &HashMap<String, String>,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let what = if paused {
        "pausing a check"
    } else {
        "resuming a check"
    };
    let access = admin(shared, peer, what)?;
    Params::new(params, &[])?;
    let id = parse_id(id)?;
    let before = visible(shared, &access, id).await?;
    if !shared
        .checks
        .set_paused(id, paused)
        .await
        .map_err(stopped)??
    {
        return Err(ApiError::NotFound(format!("check {id}")));
    }
    let c = visible(shared, &access, id).await?;
    tracing::info!(id, tenant = %before.tenant, name = %before.name, paused, by = %peer.identity, "check paused or resumed");
    Ok(Json(view(shared, &c)))
}

pub(super) async fn pause(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    pause_or_resume(&shared, &peer, &id, &params, true).await
}

pub(super) async fn resume(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    pause_or_resume(&shared, &peer, &id, &params, false).await
}

pub(super) async fn rotate(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: http::Uri,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = admin(&shared, &peer, "rotating a check's token")?;
    Params::new(&params, &[])?;
    let id = parse_id(&id)?;
    visible(&shared, &access, id).await?;
    let token = token::new_token();
    let hash = token::hash(&token);
    let author = peer.identity.to_string();
    let now = crate::store::now_ms();
    shared
        .store
        .run(move |s| Ok(checks_store::rotate(s, id, &hash, &author, now)))
        .await??;
    shared.checks.reload(id).await.map_err(stopped)?;
    let c = visible(&shared, &access, id).await?;
    tracing::info!(id, tenant = %c.tenant, name = %c.name, by = %peer.identity, "check token rotated");
    Ok(Json(with_token(
        &shared,
        caller_host(&headers, &uri).as_deref(),
        &c,
        &token,
    )))
}

pub(super) async fn pings(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["limit", "before"])?;
    let limit = u32::try_from(p.int("limit", 100, 1, MAX_PINGS)?).unwrap_or(100);
    let before = p
        .get("before")
        .map(|_| p.int("before", 0, 1, i64::MAX))
        .transpose()?;
    let id = parse_id(&id)?;
    visible(&shared, &access, id).await?;
    let rows = shared
        .store
        .run(move |s| checks_store::pings(s, id, limit, before))
        .await?;
    Ok(Json(json!({ "pings": rows })))
}

/// Whether the caller's tenant has a ping key (`GET`).
pub(super) async fn ping_key(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["tenant"])?;
    let tenant = access
        .owner(p.get("tenant").map(String::as_str), "ping keys")
        .map_err(ApiError::NotAllowed)?;
    let t = tenant.clone();
    let made = shared
        .store
        .run(move |s| checks_store::ping_key_made(s, &t))
        .await?;
    Ok(Json(
        json!({ "tenant": tenant, "has_key": made.is_some(), "created_ms": made }),
    ))
}

/// A new ping key for the caller's tenant (`POST`): the previous one
/// stops working at once; shown once.
pub(super) async fn new_ping_key(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: http::Uri,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = admin(&shared, &peer, "making a ping key")?;
    let p = Params::new(&params, &["tenant"])?;
    let tenant = access
        .owner(p.get("tenant").map(String::as_str), "ping keys")
        .map_err(ApiError::NotAllowed)?;
    let key = token::new_ping_key();
    let hash = token::hash(&key);
    let t = tenant.clone();
    let now = crate::store::now_ms();
    shared
        .store
        .run(move |s| checks_store::set_ping_key(s, &t, &hash, now))
        .await?;
    shared.checks.reload_keys().await.map_err(stopped)?;
    tracing::info!(tenant = %tenant, by = %peer.identity, "ping key made");
    let mut v = json!({ "tenant": tenant, "ping_key": key });
    if let Some(base) = ping_base(&shared, caller_host(&headers, &uri).as_deref()) {
        v["ping_url"] = json!(format!("{base}/ping/{key}/<slug>"));
    }
    Ok(Json(v))
}

/// `GET /api/v1/checks/ID/availability`: the last 24 h minute by minute
/// and the share of up time over 24 h, 7 d and 30 d (minutes outside its
/// schedule count for neither).
pub(super) async fn availability(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let c = visible(&shared, &access, parse_id(&id)?).await?;
    let config = shared.settings.borrow().clone();
    let schedule = c.spec.expectation(&config).schedule;
    let now = crate::store::now_ms();
    let v = shared
        .store
        .run(move |s| {
            crate::read::availability::of_check(s, &c.tenant, c.id, schedule.as_ref(), now)
        })
        .await?;
    Ok(Json(v))
}
