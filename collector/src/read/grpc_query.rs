//! `sonde.v1.QueryService`: the HTTP API's read operations over gRPC. The
//! work is in `query.rs`, shared with the HTTP handlers; this file checks
//! the caller, converts messages, and maps errors to `tonic::Status` in
//! one place ([`status`]).

use std::sync::Arc;

use sonde_proto::v1 as pb;
use sonde_proto::v1::query_service_server::QueryService;
use tonic::{Request, Response, Status};

use crate::Shared;
use crate::consumers::analysis::series::{Averages, Latest, Minute, Series, Window};
use crate::ingest::peer::Peer;
use crate::observation::Probe;
use crate::read::access::Access;
use crate::read::query::{self, QueryError, TargetFilter, TargetView};
use crate::store::{EventQuery, StoreError};

/// The service.
#[derive(Debug, Clone)]
pub struct Queries {
    shared: Arc<Shared>,
}

impl Queries {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn access<T>(&self, req: &Request<T>) -> Result<Access, Status> {
        let peer = req.extensions().get::<Peer>().ok_or_else(|| {
            Status::unauthenticated("connection carries no verified peer identity")
        })?;
        Access::of(&self.shared.settings.borrow(), &peer.identity).map_err(|e| {
            tracing::warn!(peer = %peer.identity, remote = %peer.remote, "query refused: role may not view");
            Status::permission_denied(e.to_string())
        })
    }
}

/// The one mapping of query errors to gRPC statuses.
fn status(e: QueryError) -> Status {
    match e {
        QueryError::PrefixForbidden(_) | QueryError::TenantForbidden(_) => {
            Status::permission_denied(e.to_string())
        }
        QueryError::Bad { .. } => Status::invalid_argument(e.to_string()),
        QueryError::NoSeries(_) | QueryError::NoAgent(_) => Status::not_found(e.to_string()),
        QueryError::Store(e) => store_status(&e),
    }
}

fn store_status(e: &StoreError) -> Status {
    // Never leak internals (paths) to the peer; the log has them.
    tracing::error!(error = %e, "query failed");
    Status::internal("collector storage error")
}

fn bad(name: &'static str, reason: String) -> Status {
    status(QueryError::Bad { name, reason })
}

fn probe(raw: &str) -> Result<Option<Probe>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    Probe::parse(raw)
        .map(Some)
        .ok_or_else(|| bad("probe", format!("{raw:?} is not ping, tcp or trace")))
}

fn limit(raw: u32, default: u32, max: u32, name: &'static str) -> Result<u32, Status> {
    match raw {
        0 => Ok(default),
        n if n <= max => Ok(n),
        n => Err(bad(name, format!("{n} is outside 1..={max}"))),
    }
}

fn window(w: &Window) -> pb::Window {
    pb::Window {
        mean_ms: w.mean_ms,
        loss_pct: w.loss_pct,
        jitter_ms: w.jitter_ms,
        probes: w.probes,
    }
}

fn latest(l: &Latest) -> pb::Latest {
    pb::Latest {
        time_ms: l.time_ns.div_euclid(1_000_000),
        rtt_ms: l.rtt_ms,
        status: l.status.to_owned(),
    }
}

fn averages(a: &Averages) -> pb::Averages {
    pb::Averages {
        latest: a.latest.as_ref().map(latest),
        last_1m: Some(window(&a.m1)),
        last_5m: Some(window(&a.m5)),
        last_1h: Some(window(&a.h1)),
        last_24h: Some(window(&a.h24)),
    }
}

fn minute(m: &Minute) -> pb::Minute {
    pb::Minute {
        start_ms: m.start_ms,
        probes: m.probes,
        mean_ms: m.mean_ms,
        loss_pct: m.loss_pct,
        no_data: m.no_data,
    }
}

/// A state enum as its API spelling.
fn spelled<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn target(t: &TargetView) -> pb::Target {
    pb::Target {
        id: t.id,
        tenant: t.tenant.clone(),
        agent: t.agent.clone(),
        probe: t.probe.as_str().to_owned(),
        target: t.target.clone(),
        address: t.address.clone().unwrap_or_default(),
        prefix: t.prefix.clone().unwrap_or_default(),
        state: spelled(&t.state),
        down_since_ms: t.down_since_ms,
        averages: Some(averages(&t.averages)),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl QueryService for Queries {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let scope = self.access(&req)?.scope();
        let rows = self
            .shared
            .store
            .run(move |s| s.agents(&scope))
            .await
            .map_err(|e| store_status(&e))?;
        let agents = rows
            .into_iter()
            .map(|a| pb::Agent {
                state: spelled(&a.state),
                tenant: a.tenant,
                name: a.name,
                connected: a.connected,
                last_heartbeat_ms: a.last_heartbeat_ms,
                first_seen_ms: a.first_seen_ms,
                remote_addr: a.remote_addr,
                agent_version: a.agent_version,
                hostname: a.hostname,
                os: a.os,
                heartbeat_interval_ms: a.heartbeat_interval_ms,
                grace_ms: a.grace_ms,
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_targets(
        &self,
        req: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let access = self.access(&req)?;
        let r = req.into_inner();
        let filter = TargetFilter {
            agent: (!r.agent.is_empty()).then_some(r.agent),
            probe: probe(&r.probe)?,
            prefix: if r.prefix.is_empty() {
                None
            } else {
                Some(r.prefix.parse().map_err(|_| {
                    bad(
                        "prefix",
                        format!("{:?} is not a CIDR prefix such as 10.1.2.0/24", r.prefix),
                    )
                })?)
            },
            after: r.after,
            limit: limit(r.limit, 1000, 10_000, "limit")? as usize,
        };
        let h = &self.shared.analysis;
        let (rows, next_after) = query::targets(&h.read(), &access, &filter, h.clock.now_ns());
        Ok(Response::new(pb::ListTargetsResponse {
            targets: rows.iter().map(target).collect(),
            next_after,
        }))
    }

    async fn list_prefixes(
        &self,
        req: Request<pb::ListPrefixesRequest>,
    ) -> Result<Response<pb::ListPrefixesResponse>, Status> {
        let access = self.access(&req)?;
        let prefixes = query::prefixes(&self.shared.analysis.read(), &access)
            .into_iter()
            .map(|p| pb::Prefix {
                prefix: p.prefix,
                monitored: count(p.monitored),
                down: count(p.down),
                series: count(p.series),
            })
            .collect();
        Ok(Response::new(pb::ListPrefixesResponse { prefixes }))
    }

    async fn get_prefix_grid(
        &self,
        req: Request<pb::GetPrefixGridRequest>,
    ) -> Result<Response<pb::PrefixGrid>, Status> {
        let access = self.access(&req)?;
        let prefix = query::parse_prefix(&req.get_ref().prefix).map_err(status)?;
        let h = &self.shared.analysis;
        let grid = query::grid(&h.read(), &access, prefix, h.clock.now_ns()).map_err(status)?;
        let cells = grid
            .cells
            .iter()
            .map(|c| pb::Cell {
                address: c.address.clone(),
                monitored: c.monitored,
                state: c.state.unwrap_or_default().to_owned(),
                latest: c.latest.as_ref().map(latest),
                mean_ms_1m: c.mean_ms_1m,
                loss_pct_1m: c.loss_pct_1m,
                series: c.series,
                series_down: c.series_down,
                timeline: c.timeline.iter().map(minute).collect(),
            })
            .collect();
        Ok(Response::new(pb::PrefixGrid {
            prefix: grid.prefix,
            monitored: count(grid.monitored),
            cells,
        }))
    }

    async fn get_series(
        &self,
        req: Request<pb::GetSeriesRequest>,
    ) -> Result<Response<pb::SeriesHistory>, Status> {
        let access = self.access(&req)?;
        let r = req.into_inner();
        let tenant = if r.tenant.is_empty() {
            access.tenant.clone()
        } else {
            r.tenant
        };
        let kind = probe(&r.probe)?;
        let now = self.shared.analysis.clock.now_ns();
        let (from, to) = query::range(r.from_ms, r.to_ms, now / 1_000_000).map_err(status)?;
        let found: Series = query::find_series(
            &self.shared.analysis.read(),
            &access,
            &tenant,
            &r.agent,
            &r.target,
            kind,
        )
        .map_err(status)?;
        let view = query::target_view(&found, now);
        let timeline = found.timeline(now).iter().map(minute).collect();
        let minutes = self
            .shared
            .store
            .run(move |s| query::history(s, &found, from, to, 1))
            .await
            .map_err(|e| store_status(&e))?
            .into_iter()
            .map(|m| pb::HistoryMinute {
                start_ms: m.start_ms,
                probes: m.probes,
                lost: m.lost,
                mean_ms: m.mean_ms,
                min_ms: m.min_ms,
                max_ms: m.max_ms,
                jitter_ms: m.jitter_ms,
                loss_pct: m.loss_pct,
            })
            .collect();
        Ok(Response::new(pb::SeriesHistory {
            series: Some(target(&view)),
            timeline,
            from_ms: from,
            to_ms: to,
            minutes,
        }))
    }

    async fn list_outages(
        &self,
        req: Request<pb::ListOutagesRequest>,
    ) -> Result<Response<pb::ListOutagesResponse>, Status> {
        let access = self.access(&req)?;
        let r = req.into_inner();
        let n = limit(r.limit, 100, 1000, "limit")?;
        let rows = self
            .shared
            .store
            .run(move |s| query::outages(s, &access, r.open_only, n))
            .await
            .map_err(|e| store_status(&e))?;
        let outages = rows
            .into_iter()
            .map(|o| pb::Outage {
                id: o.id,
                scope: o.scope,
                subject: o.subject,
                start_ms: o.start_ms,
                end_ms: o.end_ms,
                duration_s: o.duration_s,
                lost: o.lost,
                detail_json: o.detail.to_string(),
                tenant: o.tenant,
            })
            .collect();
        Ok(Response::new(pb::ListOutagesResponse { outages }))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let access = self.access(&req)?;
        let r = req.into_inner();
        if r.after < 0 {
            return Err(bad("after", format!("{} is negative", r.after)));
        }
        let agent = if r.agent.is_empty() {
            None
        } else {
            sonde_proto::identity::validate_component("agent name", &r.agent)
                .map_err(|e| bad("agent", e.to_string()))?;
            Some(r.agent)
        };
        let q = EventQuery {
            after_id: r.after,
            before_id: None,
            limit: limit(r.limit, 100, 1000, "limit")?,
            agent,
            ..EventQuery::default()
        };
        let (rows, next_after) = self
            .shared
            .store
            .run(move |s| query::events(s, &access, q))
            .await
            .map_err(|e| store_status(&e))?;
        let events = rows
            .into_iter()
            .map(|e| pb::Event {
                id: e.id,
                at_ms: e.at_ms,
                kind: spelled(&e.kind),
                tenant: e.tenant,
                agent: e.agent,
                detail_json: e.detail.to_string(),
                prefix: e.prefix.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListEventsResponse { events, next_after }))
    }
}
