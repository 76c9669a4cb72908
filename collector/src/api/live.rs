//! `GET /api/v1/live` (server-sent events: a grid frame per second, only
//! the prefixes that changed) and `GET /api/v1/replay?at=` (the frame of
//! one past minute). Frames are described in [`crate::live`].
//!
//! The stream re-derives the caller's access every tick, so a grant taken
//! away on reload disappears from an open page at once. It is produced
//! only as fast as the client reads (a stalled client holds one frame, not
//! a queue), at most [`MAX_STREAMS`] are open at a time, and every stream
//! ends when the collector shuts down.

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
use crate::access::Access;
use crate::live::{self, PrefixFrame};
use crate::peer::Peer;

/// Live streams open at once, all callers together.
pub const MAX_STREAMS: usize = 64;
/// Time between two frames: the default probe interval.
pub const TICK: Duration = Duration::from_secs(1);

/// What one stream remembers between frames.
struct Cursor {
    shared: Arc<Shared>,
    peer: Peer,
    last: BTreeMap<String, PrefixFrame>,
    tick: tokio::time::Interval,
    _slot: tokio::sync::OwnedSemaphorePermit,
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
    let slot = shared.live_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{MAX_STREAMS} live streams are open; close a page or use /api/v1/prefixes"
        ))
    })?;
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
