//! Reconnect delays: exponential, capped, with jitter.
//!
//! Delay *n* is drawn uniformly from `[d/2, d]` where
//! `d = min(max, initial × 2ⁿ)` ("equal jitter"): never zero, never above
//! the cap, and a fleet of agents cut off together does not reconnect in
//! lock-step when the collector comes back.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Backoff state for one connection.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// A backoff seeded from the OS.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, StdRng::from_os_rng())
    }

    /// A deterministic backoff (tests).
    pub fn seeded(initial: Duration, max: Duration, seed: u64) -> Self {
        Self::with_rng(initial, max, StdRng::seed_from_u64(seed))
    }

    fn with_rng(initial: Duration, max: Duration, rng: StdRng) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng,
        }
    }

    /// Changes the bounds (config reload), keeping the attempt count.
    pub fn set_bounds(&mut self, initial: Duration, max: Duration) {
        self.initial = initial;
        self.max = max.max(initial);
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .checked_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .map_or(self.max, |d| d.min(self.max));
        self.attempt = self.attempt.saturating_add(1);
        let floor = ceiling / 2;
        floor + ceiling.mul_f64(self.rng.random::<f64>() * 0.5)
    }

    /// Back to the initial delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_jitters_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::seeded(ms(500), ms(30_000), 7);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let ceiling = ms(500 * (1u64 << n)).min(ms(30_000));
            assert!(
                *d >= ceiling / 2 && *d <= ceiling,
                "attempt {n}: {d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        // Capped from attempt 6 on (500 ms × 64 > 30 s), and jittered there.
        assert!(delays[6..].iter().all(|d| *d >= ms(15_000)));
        assert!(
            delays[6..].windows(2).any(|w| w[0] != w[1]),
            "no jitter: {delays:?}"
        );
        b.reset();
        assert!(b.next_delay() <= ms(500));
        // Many attempts never overflow.
        for _ in 0..100 {
            assert!(b.next_delay() <= ms(30_000));
        }
    }

    #[test]
    fn two_agents_do_not_retry_in_lock_step() {
        let ms = Duration::from_millis;
        let mut a = Backoff::seeded(ms(500), ms(30_000), 1);
        let mut b = Backoff::seeded(ms(500), ms(30_000), 2);
        let same = (0..10).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 2, "{same} identical delays");
    }
}
