//! Aggregates of probe results over a time unit (a minute, an hour), and a
//! ring of the most recent ones per series.
//!
//! A bucket holds probes sent, probes lost, and sum, sum of squares, min
//! and max of the RTT of the answered ones (milliseconds): enough for the
//! mean, loss %, standard deviation (jitter) and range of any union of
//! buckets, which is how the moving-average windows are computed.

/// Probe results aggregated over one time unit.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Bucket {
    pub probes: u32,
    pub lost: u32,
    pub sum_ms: f64,
    pub sum_sq_ms: f64,
    /// Meaningful only when something answered.
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Bucket {
    /// Adds one probe: `Some(rtt)` answered, `None` lost.
    pub fn add(&mut self, rtt_ms: Option<f64>) {
        let mut one = Bucket {
            probes: 1,
            ..Bucket::default()
        };
        match rtt_ms.filter(|r| r.is_finite()) {
            Some(r) => {
                one.sum_ms = r;
                one.sum_sq_ms = r * r;
                one.min_ms = r;
                one.max_ms = r;
            }
            None => one.lost = 1,
        }
        self.merge(&one);
    }

    /// Adds another bucket's probes to this one.
    pub fn merge(&mut self, o: &Bucket) {
        if o.answered() > 0 {
            if self.answered() == 0 {
                self.min_ms = o.min_ms;
                self.max_ms = o.max_ms;
            } else {
                self.min_ms = self.min_ms.min(o.min_ms);
                self.max_ms = self.max_ms.max(o.max_ms);
            }
        }
        self.probes += o.probes;
        self.lost += o.lost;
        self.sum_ms += o.sum_ms;
        self.sum_sq_ms += o.sum_sq_ms;
    }

    pub fn answered(&self) -> u32 {
        self.probes - self.lost
    }

    /// Mean RTT of the answered probes.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.answered() > 0).then(|| self.sum_ms / f64::from(self.answered()))
    }

    /// Lost probes as a percentage of probes sent.
    pub fn loss_pct(&self) -> Option<f64> {
        (self.probes > 0).then(|| 100.0 * f64::from(self.lost) / f64::from(self.probes))
    }

    /// Population standard deviation of the answered RTTs (jitter).
    pub fn stddev_ms(&self) -> Option<f64> {
        let n = f64::from(self.answered());
        let mean = self.mean_ms()?;
        Some((self.sum_sq_ms / n - mean * mean).max(0.0).sqrt())
    }

    pub fn min(&self) -> Option<f64> {
        (self.answered() > 0).then_some(self.min_ms)
    }

    pub fn max(&self) -> Option<f64> {
        (self.answered() > 0).then_some(self.max_ms)
    }
}

/// The last `len` units of a series: slot `i` holds unit index `i` (time
/// divided by the unit) modulo `len`. A result for a unit older than the
/// ring covers is not kept here (the persisted buckets still get it).
#[derive(Debug, Clone)]
pub struct Ring {
    unit_ns: i64,
    slots: Vec<(i64, Bucket)>,
}

impl Ring {
    pub fn new(unit_ns: i64, len: usize) -> Self {
        Self {
            unit_ns,
            slots: vec![(i64::MIN, Bucket::default()); len],
        }
    }

    /// The unit index of a time.
    pub fn unit(&self, time_ns: i64) -> i64 {
        time_ns.div_euclid(self.unit_ns)
    }

    fn slot(&self, unit: i64) -> usize {
        let len = i64::try_from(self.slots.len()).unwrap_or(i64::MAX);
        usize::try_from(unit.rem_euclid(len)).unwrap_or(0)
    }

    /// Adds a bucket's worth to unit `unit`; returns false when the unit
    /// is older than what the ring holds.
    pub fn merge(&mut self, unit: i64, b: &Bucket) -> bool {
        let i = self.slot(unit);
        let (held, bucket) = &mut self.slots[i];
        match (*held).cmp(&unit) {
            std::cmp::Ordering::Equal => bucket.merge(b),
            std::cmp::Ordering::Less => {
                *held = unit;
                *bucket = *b;
            }
            std::cmp::Ordering::Greater => return false,
        }
        true
    }

    /// The bucket of unit `unit` (empty when not held).
    pub fn get(&self, unit: i64) -> Bucket {
        let (held, b) = self.slots[self.slot(unit)];
        if held == unit { b } else { Bucket::default() }
    }

    /// The union of units `from..=to`.
    pub fn sum(&self, from: i64, to: i64) -> Bucket {
        let mut total = Bucket::default();
        for (held, b) in &self.slots {
            if (from..=to).contains(held) {
                total.merge(b);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_bucket() {
        let mut b = Bucket::default();
        for r in [Some(10.0), None, Some(20.0), Some(30.0), None] {
            b.add(r);
        }
        assert_eq!((b.probes, b.lost, b.answered()), (5, 2, 3));
        assert_eq!(b.mean_ms(), Some(20.0));
        assert_eq!(b.loss_pct(), Some(40.0));
        // Population stddev of 10, 20, 30: sqrt(200/3).
        assert!((b.stddev_ms().unwrap() - (200.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert_eq!((b.min(), b.max()), (Some(10.0), Some(30.0)));
        let mut lost_only = Bucket::default();
        lost_only.add(None);
        assert_eq!(
            (lost_only.mean_ms(), lost_only.loss_pct(), lost_only.min()),
            (None, Some(100.0), None)
        );
        assert_eq!(Bucket::default().loss_pct(), None);
        // Merging a lost-only bucket keeps min/max of the answered ones.
        b.merge(&lost_only);
        assert_eq!((b.min(), b.max(), b.probes), (Some(10.0), Some(30.0), 6));
        b.add(Some(f64::NAN)); // never poisons the sums
        assert_eq!((b.lost, b.mean_ms()), (4, Some(20.0)));
    }

    #[test]
    fn ring_keeps_the_last_units_only() {
        let mut r = Ring::new(60, 3);
        let one = |rtt| {
            let mut b = Bucket::default();
            b.add(Some(rtt));
            b
        };
        assert!(r.merge(r.unit(0), &one(1.0)));
        assert!(r.merge(r.unit(61), &one(2.0)));
        assert!(r.merge(r.unit(125), &one(3.0)));
        assert!(r.merge(r.unit(126), &one(5.0)));
        assert_eq!(r.sum(0, 2).probes, 4);
        // Unit 3 replaces unit 0; unit 0 can no longer be written.
        assert!(r.merge(3, &one(4.0)));
        assert!(!r.merge(0, &one(9.0)));
        assert_eq!(r.get(0).probes, 0);
        assert_eq!(r.sum(1, 3).mean_ms(), Some(3.5));
        assert_eq!(r.sum(2, 2).mean_ms(), Some(4.0));
    }
}
