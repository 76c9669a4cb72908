//! The HTTP JSON API under `/api/v1/`, on the mTLS listener.
//!
//! Every handler derives the caller's scope from the certificate (the
//! [`Peer`] the listener attached): viewers and admins see their own tenant,
//! members of an operator tenant see all tenants, agents see nothing.
//! Errors are JSON `{"error": "..."}` with a status that says what kind of
//! mistake it was; query parameters are validated and unknown ones refused.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::Shared;
use crate::peer::Peer;
use crate::store::{AgentRow, EventQuery, EventRow, Scope, StoreError};

/// Largest page of events one request may ask for.
pub const MAX_EVENTS_LIMIT: u32 = 1000;
const DEFAULT_EVENTS_LIMIT: u32 = 100;

/// What can go wrong answering an API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("certificate role {0} may not use the API (viewer or admin required)")]
    Forbidden(sonde_proto::Role),
    #[error("invalid query parameter {name}: {reason}")]
    BadParam { name: String, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("internal error")]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Store(e) => {
                tracing::error!(error = %e, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// The API routes (the listener adds the `Peer` extension). No fallback:
/// [`not_found`] serves both gRPC and HTTP once the routers are merged.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/events", get(events))
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
        tonic::Status::unimplemented(format!("no such method {}", req.uri().path()))
            .into_http::<axum::body::Body>()
    } else {
        ApiError::NotFound(req.uri().path().to_owned()).into_response()
    }
}

/// The scope a caller may see, or 403.
fn scope(shared: &Shared, peer: &Peer) -> Result<Scope, ApiError> {
    let id = &peer.identity;
    if !id.role.can_view() {
        tracing::warn!(peer = %id, remote = %peer.remote, "API request refused: role may not view");
        return Err(ApiError::Forbidden(id.role));
    }
    let operators = &shared.settings.borrow().access.operator_tenants;
    Ok(if operators.contains(&id.tenant) {
        Scope::All
    } else {
        Scope::Tenant(id.tenant.clone())
    })
}

async fn agents(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = scope(&shared, &peer)?;
    Params::new(&params, &[])?;
    let rows: Vec<AgentRow> = shared.store.run(move |s| s.agents(&scope)).await?;
    Ok(Json(json!({ "agents": rows })))
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = scope(&shared, &peer)?;
    let p = Params::new(&params, &["after", "limit", "agent"])?;
    let query = EventQuery {
        after_id: p.int("after", 0, 0, i64::MAX)?,
        limit: u32::try_from(p.int(
            "limit",
            DEFAULT_EVENTS_LIMIT.into(),
            1,
            MAX_EVENTS_LIMIT.into(),
        )?)
        .unwrap_or(DEFAULT_EVENTS_LIMIT),
        agent: p.name("agent")?,
    };
    let after = query.after_id;
    let rows: Vec<EventRow> = shared.store.run(move |s| s.events(&scope, &query)).await?;
    let next = rows.last().map_or(after, |e| e.id);
    Ok(Json(json!({ "events": rows, "next_after": next })))
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
