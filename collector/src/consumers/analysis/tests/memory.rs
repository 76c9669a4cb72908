//! What a series costs in memory (issue 23: at most 3 KiB at steady
//! state). The test binary's allocator counts, per thread, the bytes the
//! heap holds; the analysis runs on this test's thread only, so the
//! difference is exactly what its series hold (the heap's own overhead
//! per allocation aside, which `sonde-load`'s RSS figure includes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static HELD: Cell<i64> = const { Cell::new(0) };
}

/// The system allocator, counting.
struct Counting;

fn count(delta: usize, sign: i64) {
    let delta = i64::try_from(delta).unwrap_or(i64::MAX);
    // `try_with`: a thread being torn down no longer counts.
    let _ = HELD.try_with(|h| h.set(h.get() + sign * delta));
}

// SAFETY (reviewed): every call is passed to `System` unchanged with the
// caller's own pointer and layout, so `System`'s contract is the caller's;
// the counter is a const-initialised thread-local `Cell` without a
// destructor, which never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: as above.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn held() -> i64 {
    HELD.with(Cell::get)
}

/// A round of `targets` ping results from each of `agents` agents, one
/// minute apart per round; the targets are the same for every agent
/// (as when a tenant's agents all probe its targets).
fn round(an: &mut Analyzer, agents: usize, targets: u32, t: i64) {
    for a in 0..agents {
        let records = (0..targets)
            .map(|n| {
                let [_, _, x, y] = n.to_be_bytes();
                let rtt = f64::from(n % 97) + 0.25;
                ping(
                    &format!("10.20.{x}.{y}"),
                    t + i64::from(n) * 1_000,
                    Some(rtt),
                )
            })
            .collect();
        an.apply_entry(&crate::log::Entry::decode(entry(
            &format!("agent-{a}"),
            records,
        )));
    }
}

#[test]
fn a_series_costs_at_most_three_kib_at_steady_state() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let _in = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let mut an = analyzer(&store, Settings::default());
    let (agents, targets) = (40, 500u32);
    let series = i64::try_from(agents).unwrap() * i64::from(targets);
    // Warm-up: the first round, one checkpoint (its statement caches and
    // buffers are not per series).
    round(&mut an, 1, 1, T0);
    an.checkpoint().unwrap();
    let before = held();
    // Steady state: every series with results in three minutes and the
    // changes since the last checkpoint not written yet.
    for minute in 0..3 {
        round(&mut an, agents, targets, T0 + minute * 60 * S);
        if minute < 2 {
            an.checkpoint().unwrap();
        }
    }
    assert_eq!(
        an.book.read().unwrap().len(),
        usize::try_from(series).unwrap()
    );
    let per_series = (held() - before) / series;
    eprintln!("{series} series: {per_series} bytes each");
    assert!(
        per_series <= 3 * 1024,
        "a series holds {per_series} bytes (more than 3 KiB)"
    );
}
