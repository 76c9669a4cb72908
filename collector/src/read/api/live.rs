//! `GET /api/v1/live` (server-sent events: a grid frame per second, only
//! the prefixes that changed) and `GET /api/v1/replay?at=` (the frame of
//! one past minute). Frames are described in [`crate::read::live`].
//!
//! The stream re-derives the caller's access every tick, so a grant taken
//! away on reload disappears from an open page at once. It is produced
//! only as fast as the client reads (a stalled client holds one frame, not
//! a queue), at most [`MAX_STREAMS`] are open at a time — of them at most
//! [`MAX_PER_IDENTITY`] for one certificate identity and [`MAX_PER_TENANT`]
//! for one tenant, so one viewer cannot starve the others — and every
//! stream ends when the collector shuts down.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt as _;
use serde_json::json;

use super::{ApiError, Params, access};
use crate::Shared;
use crate::ingest::peer::Peer;
use crate::read::access::Access;
use crate::read::live::{self, PrefixFrame};

/// Live streams open at once, all callers together.
pub const MAX_STREAMS: usize = 64;
/// … of them for one certificate identity (a person's browser tabs).
pub const MAX_PER_IDENTITY: usize = 8;
/// … of them for the members of one tenant.
pub const MAX_PER_TENANT: usize = 32;
/// Time between two frames: the default probe interval.
pub const TICK: Duration = Duration::from_secs(1);

/// The open streams, by identity and tenant.
#[derive(Debug, Default)]
pub struct Slots {
    open: std::sync::Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    identity: HashMap<String, usize>,
    tenant: HashMap<String, usize>,
}

/// One open stream's place; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    identity: String,
    tenant: String,
}

impl Slots {
    /// A place for a stream of `peer`, or why there is none.
    fn take(self: &Arc<Self>, identity: &str, tenant: &str) -> Result<Slot, ApiError> {
        let mut o = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = o.identity.get(identity).copied().unwrap_or(0);
        let ours = o.tenant.get(tenant).copied().unwrap_or(0);
        if mine >= MAX_PER_IDENTITY {
            return Err(ApiError::TooMany(format!(
                "{MAX_PER_IDENTITY} live streams of your certificate are open; close a page"
            )));
        }
        if ours >= MAX_PER_TENANT {
            return Err(ApiError::TooMany(format!(
                "{MAX_PER_TENANT} live streams of your tenant are open; close a page"
            )));
        }
        if o.total >= MAX_STREAMS {
            return Err(ApiError::Busy(format!(
                "{MAX_STREAMS} live streams are open; close a page or use /api/v1/prefixes"
            )));
        }
        o.total += 1;
        *o.identity.entry(identity.to_owned()).or_default() += 1;
        *o.tenant.entry(tenant.to_owned()).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            identity: identity.to_owned(),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self
            .slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        o.total = o.total.saturating_sub(1);
        let Open {
            identity, tenant, ..
        } = &mut *o;
        for (map, key) in [(identity, &self.identity), (tenant, &self.tenant)] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

/// What one stream remembers between frames.
struct Cursor {
    shared: Arc<Shared>,
    peer: Peer,
    last: BTreeMap<String, PrefixFrame>,
    tick: tokio::time::Interval,
    _slot: Slot,
}

impl Cursor {
    /// The next event, or `None` when the caller may no longer view.
    async fn next(&mut self) -> Option<Event> {
        self.tick.tick().await;
        let access = Access::of(&self.shared.settings.borrow(), &self.peer.identity).ok()?;
        let h = &self.shared.analysis;
        let now = h.clock.now_ns();
        let frames = live::live(&h.read(), &access, now);
        let full = self.last.is_empty();
        let order: Vec<&str> = frames.iter().map(|f| f.prefix.as_str()).collect();
        let changed: Vec<&PrefixFrame> = frames
            .iter()
            .filter(|f| self.last.get(&f.prefix) != Some(f))
            .collect();
        let data = json!({
            "t": now.div_euclid(1_000_000),
            "full": full,
            "prefixes": order,
            "changed": changed,
        });
        let event = Event::default().event("frame").json_data(data).ok()?;
        self.last = frames.into_iter().map(|f| (f.prefix.clone(), f)).collect();
        Some(event)
    }
}

pub(super) async fn live(
    axum::extract::State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    access(&shared, &peer)?;
    Params::new(&params, &[])?;
    let slot = shared
        .live_slots
        .take(&peer.identity.to_string(), &peer.identity.tenant)?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let shutdown = shared.shutdown.clone().cancelled_owned();
    let cursor = Cursor {
        shared,
        peer,
        last: BTreeMap::new(),
        tick,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        let event = c.next().await?;
        Some((Ok::<_, Infallible>(event), c))
    })
    .take_until(shutdown);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub(super) async fn replay(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = access(&shared, &peer)?;
    let p = Params::new(&params, &["at"])?;
    let h = shared.analysis.clone();
    let now_ms = h.clock.now_ns().div_euclid(1_000_000);
    let keep = i64::try_from(shared.settings.borrow().retention.aggregates.as_millis())
        .unwrap_or(i64::MAX);
    if p.get("at").is_none() {
        return Err(ApiError::BadParam {
            name: "at".into(),
            reason: "required: the minute to show, Unix milliseconds".into(),
        });
    }
    let at = p.int("at", now_ms, now_ms - keep, now_ms)?;
    let unit = at.div_euclid(60_000);
    let frames = shared
        .store
        .run(move |s| live::replay(&h, s, &access, unit, h.clock.now_ns()))
        .await?;
    Ok(Json(json!({ "at_ms": unit * 60_000, "prefixes": frames })))
}
