//! The per-session rate limit on agent messages (heartbeats and result
//! batches): a token bucket that says how long to wait before reading the
//! next message.
//!
//! Pacing rather than refusing: a session over the rate is read more
//! slowly, HTTP/2 flow control pushes back on the agent, and its spool
//! holds what it cannot send yet. Nothing is dropped and no error is
//! invented for an agent that is only replaying a backlog quickly; a
//! hostile or broken one gets no more than its share of the collector.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket (in its GCRA form): `burst` messages at once, then
/// `rate` per second.
#[derive(Debug)]
pub struct Pacer {
    per_token: Duration,
    /// How far ahead of now the schedule may run without waiting:
    /// `burst - 1` tokens.
    tolerance: Duration,
    /// When the next message would be due at exactly the rate.
    due: Instant,
}

impl Pacer {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let per_token = Duration::from_secs(1) / rate.max(1);
        Self {
            per_token,
            tolerance: per_token * (burst.max(1) - 1),
            due: now,
        }
    }

    /// Takes a token for one message arriving at `now`; returns how long
    /// to wait before handling it (zero within the rate and burst).
    pub fn take(&mut self, now: Instant) -> Duration {
        let due = self.due.max(now);
        self.due = due + self.per_token;
        due.saturating_duration_since(now + self.tolerance)
    }

    /// Takes a token for a request arriving at `now` if one is free
    /// (refusing rather than pacing: the ping listener's 429); a refused
    /// request takes nothing.
    pub fn allow(&mut self, now: Instant) -> bool {
        let due = self.due.max(now);
        if due > now + self.tolerance {
            return false;
        }
        self.due = due + self.per_token;
        true
    }

    /// Whether the bucket is full again at `now` (forgetting it changes
    /// nothing).
    pub fn is_full(&self, now: Instant) -> bool {
        self.due <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate_then_refill() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10, 5, t0);
        // Five at once are free.
        for i in 0..5 {
            assert_eq!(p.take(t0), Duration::ZERO, "message {i}");
        }
        // The sixth waits one token (100 ms), the seventh two.
        assert_eq!(p.take(t0), Duration::from_millis(100));
        assert_eq!(p.take(t0), Duration::from_millis(200));
        // A sender that waits as told is held to 10/s.
        let mut now = t0 + Duration::from_millis(200);
        let mut sent = 0;
        while now < t0 + Duration::from_secs(10) {
            let wait = p.take(now);
            now += wait;
            sent += 1;
        }
        assert!(
            (98..=101).contains(&sent),
            "{sent} messages in ~9.8 s at 10/s"
        );
        // After a quiet minute the bucket holds 5 again, not 600.
        let later = now + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(p.take(later), Duration::ZERO);
        }
        assert_eq!(p.take(later), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn steady_sender_under_the_rate_never_waits() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10, 1, t0);
        for i in 0..100 {
            let at = t0 + Duration::from_millis(100) * i;
            assert_eq!(p.take(at), Duration::ZERO, "message {i}");
        }
    }
}
