//! Rate limits of the ping listener: a token bucket per key (a check, or
//! a source address that names no check), refusing (`429`) beyond it.
//! Buckets that have filled up again are forgotten, so the map holds only
//! keys that were busy lately, whatever a client sends.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

use crate::ingest::pace::Pacer;

/// How often full buckets are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Token buckets by key.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: u32,
    burst: u32,
    buckets: HashMap<K, Pacer>,
    swept: Instant,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            burst,
            buckets: HashMap::new(),
            swept: Instant::now(),
        }
    }

    /// Whether one more request of `key` at `now` is within the limit.
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.buckets.retain(|_, b| !b.is_full(now));
            self.swept = now;
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(key)
            .or_insert_with(|| Pacer::new(rate, burst, now))
            .allow(now)
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate_per_key_and_idle_keys_are_forgotten() {
        let mut l = Limiter::new(1, 20);
        let t0 = Instant::now();
        let allowed = (0..25).filter(|_| l.allow("a", t0)).count();
        assert_eq!(allowed, 20);
        // Another key is not held back by the first.
        assert!(l.allow("b", t0));
        // One more per second.
        assert!(!l.allow("a", t0 + Duration::from_millis(900)));
        assert!(l.allow("a", t0 + Duration::from_secs(1)));
        assert!(!l.allow("a", t0 + Duration::from_secs(1)));
        // A thousand keys that each sent once are gone after they refill.
        for i in 0..1000 {
            l.allow(format!("k{i}").leak() as &str, t0);
        }
        assert!(l.len() > 1000);
        let later = t0 + Duration::from_secs(120);
        assert!(l.allow("z", later));
        assert_eq!(l.len(), 1, "only the key just used is held");
    }
}
