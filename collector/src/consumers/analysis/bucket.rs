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

/// One unit of a ring: 24 bytes where a [`Bucket`] takes 40. A ring needs
/// neither min nor max (no live view shows them; the stored buckets keep
/// them), and its counts fit 16 bits but for a series probed more than
/// 65,534 times in one unit, whose counts go to the ring's `wide` side
/// table. The sums stay `f64` and are added in the same order as a
/// `Bucket`'s, so every figure is the same to the last bit.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The unit held, plus one; 0 when the slot never held one.
    held: u32,
    /// `WIDE` when the counts are in the ring's side table.
    probes: u16,
    lost: u16,
    sum_ms: f64,
    sum_sq_ms: f64,
}

/// Marks a slot whose counts are in the side table.
const WIDE: u16 = u16::MAX;

/// The last `LEN` units of `UNIT_NS` nanoseconds of a series: slot `i`
/// holds unit index `i` (time divided by the unit) modulo `LEN`. A result
/// for a unit older than the ring covers is not kept here (the persisted
/// buckets still get it), nor one before 1970 or past the year 10,000
/// (unit indexes that do not fit 32 bits).
#[derive(Debug, Clone)]
pub struct Ring<const UNIT_NS: i64, const LEN: usize> {
    slots: Box<[Slot; LEN]>,
    /// Counts of slots past 16 bits, by slot index (rarely any).
    #[allow(clippy::box_collection)] // 8 bytes in every ring, not 24
    wide: Option<Box<std::collections::BTreeMap<usize, (u32, u32)>>>,
}

impl<const UNIT_NS: i64, const LEN: usize> Default for Ring<UNIT_NS, LEN> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const UNIT_NS: i64, const LEN: usize> Ring<UNIT_NS, LEN> {
    pub fn new() -> Self {
        let slots: Box<[Slot]> = vec![Slot::default(); LEN].into_boxed_slice();
        Self {
            slots: slots.try_into().expect("LEN slots"),
            wide: None,
        }
    }

    /// The unit index of a time.
    pub fn unit(&self, time_ns: i64) -> i64 {
        time_ns.div_euclid(UNIT_NS)
    }

    fn slot(unit: i64) -> usize {
        let len = i64::try_from(LEN).unwrap_or(i64::MAX);
        usize::try_from(unit.rem_euclid(len)).unwrap_or(0)
    }

    /// The tag a slot holding `unit` carries.
    fn tag(unit: i64) -> Option<u32> {
        u32::try_from(unit.checked_add(1)?).ok().filter(|t| *t > 0)
    }

    /// The counts of slot `i` (probes, lost).
    fn counts(&self, i: usize) -> (u32, u32) {
        let s = &self.slots[i];
        if s.probes == WIDE {
            self.wide
                .as_ref()
                .and_then(|w| w.get(&i).copied())
                .unwrap_or_default()
        } else {
            (u32::from(s.probes), u32::from(s.lost))
        }
    }

    fn set_counts(&mut self, i: usize, probes: u32, lost: u32) {
        let slot = &mut self.slots[i];
        if let (Ok(p), Ok(l)) = (u16::try_from(probes), u16::try_from(lost))
            && p != WIDE
        {
            slot.probes = p;
            slot.lost = l;
            if let Some(w) = self.wide.as_mut() {
                w.remove(&i);
                if w.is_empty() {
                    self.wide = None;
                }
            }
        } else {
            slot.probes = WIDE;
            self.wide.get_or_insert_default().insert(i, (probes, lost));
        }
    }

    /// Adds a bucket's worth to unit `unit`; returns false when the unit
    /// is older than what the ring holds (or outside what it can).
    pub fn merge(&mut self, unit: i64, add: &Bucket) -> bool {
        let Some(tag) = Self::tag(unit) else {
            return false;
        };
        let i = Self::slot(unit);
        let held = self.slots[i].held;
        let (probes, lost) = match held.cmp(&tag) {
            std::cmp::Ordering::Equal => {
                let (p, l) = self.counts(i);
                let s = &mut self.slots[i];
                s.sum_ms += add.sum_ms;
                s.sum_sq_ms += add.sum_sq_ms;
                (p.saturating_add(add.probes), l.saturating_add(add.lost))
            }
            std::cmp::Ordering::Less => {
                let s = &mut self.slots[i];
                s.held = tag;
                s.sum_ms = add.sum_ms;
                s.sum_sq_ms = add.sum_sq_ms;
                (add.probes, add.lost)
            }
            std::cmp::Ordering::Greater => return false,
        };
        self.set_counts(i, probes, lost);
        true
    }

    /// Slot `i` as a bucket (no min or max: a ring keeps none).
    fn bucket(&self, i: usize) -> Bucket {
        let (probes, lost) = self.counts(i);
        let s = &self.slots[i];
        Bucket {
            probes,
            lost,
            sum_ms: s.sum_ms,
            sum_sq_ms: s.sum_sq_ms,
            min_ms: 0.0,
            max_ms: 0.0,
        }
    }

    /// The bucket of unit `unit` (empty when not held). It carries no
    /// min or max.
    pub fn get(&self, unit: i64) -> Bucket {
        let i = Self::slot(unit);
        if Self::tag(unit).is_some_and(|t| t == self.slots[i].held) {
            self.bucket(i)
        } else {
            Bucket::default()
        }
    }

    /// The union of units `from..=to` (no min or max).
    pub fn sum(&self, from: i64, to: i64) -> Bucket {
        let mut total = Bucket::default();
        let (Some(from), Some(to)) = (
            Self::tag(from.max(0)),
            Self::tag(to.min(i64::from(u32::MAX) - 1)),
        ) else {
            return total;
        };
        for (i, s) in self.slots.iter().enumerate() {
            if s.held != 0 && (from..=to).contains(&s.held) {
                total.merge(&self.bucket(i));
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
        let mut r = Ring::<60, 3>::new();
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

    /// The ring before it was made compact (issue 23): 48 bytes a slot.
    /// The property test below holds the compact one to its figures.
    struct Reference {
        slots: Vec<(i64, Bucket)>,
    }

    impl Reference {
        fn new(len: usize) -> Self {
            Self {
                slots: vec![(i64::MIN, Bucket::default()); len],
            }
        }

        fn slot(&self, unit: i64) -> usize {
            let len = i64::try_from(self.slots.len()).unwrap();
            usize::try_from(unit.rem_euclid(len)).unwrap()
        }

        fn merge(&mut self, unit: i64, b: &Bucket) -> bool {
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

        fn get(&self, unit: i64) -> Bucket {
            let (held, b) = self.slots[self.slot(unit)];
            if held == unit { b } else { Bucket::default() }
        }

        fn sum(&self, from: i64, to: i64) -> Bucket {
            let mut total = Bucket::default();
            for (held, b) in &self.slots {
                if (from..=to).contains(held) {
                    total.merge(b);
                }
            }
            total
        }
    }

    /// The figures a ring gives (a ring keeps no min or max), bit for bit.
    fn figures(b: &Bucket) -> (u32, u32, u64, u64, Option<u64>, Option<u64>) {
        (
            b.probes,
            b.lost,
            b.sum_ms.to_bits(),
            b.sum_sq_ms.to_bits(),
            b.mean_ms().map(f64::to_bits),
            b.stddev_ms().map(f64::to_bits),
        )
    }

    fn compare<const UNIT: i64, const LEN: usize>(seed: u64, start: i64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut compact = Ring::<UNIT, LEN>::new();
        let mut reference = Reference::new(LEN);
        // A unit index moving forward with results out of order, now and
        // then a late one, one from the future, or a bucket of many
        // probes (counts past 16 bits).
        let mut now = start;
        let len = i64::try_from(LEN).unwrap();
        for step in 0..3_000 {
            if rng.random_bool(0.3) {
                now += 1;
            }
            let unit = match rng.random_range(0..100) {
                0..=79 => now - rng.random_range(0..3),
                80..=89 => now - rng.random_range(0..2 * len),
                90..=94 => now + rng.random_range(1..2 * len),
                _ => rng.random_range(0..now),
            };
            let mut b = Bucket::default();
            if rng.random_range(0..50) == 0 {
                // Many probes at once: what a merge of stored buckets
                // at start does.
                b.probes = rng.random_range(30_000..70_000);
                b.lost = rng.random_range(0..=b.probes);
                let answered = f64::from(b.answered());
                b.sum_ms = answered * rng.random_range(0.1..500.0);
                b.sum_sq_ms = b.sum_ms * rng.random_range(0.1..500.0);
            } else {
                for _ in 0..rng.random_range(0..4) {
                    b.add(
                        rng.random_bool(0.8)
                            .then(|| rng.random_range(0.01..3_000.0)),
                    );
                }
            }
            assert_eq!(
                compact.merge(unit, &b),
                reference.merge(unit, &b),
                "seed {seed} step {step}: merge of unit {unit}"
            );
            let at = now - rng.random_range(0..3);
            assert_eq!(
                figures(&compact.get(at)),
                figures(&reference.get(at)),
                "seed {seed} step {step}: unit {at}"
            );
            let from = at - rng.random_range(0..=len);
            assert_eq!(
                figures(&compact.sum(from, at)),
                figures(&reference.sum(from, at)),
                "seed {seed} step {step}: units {from}..={at}"
            );
        }
    }

    #[test]
    fn the_compact_ring_gives_the_figures_of_the_ring_it_replaced() {
        use crate::consumers::analysis::series::{HOUR_NS, HOURS_KEPT, MINUTE_NS, MINUTES_KEPT};
        // 2027-01-15T08:00:00Z.
        let t0 = 1_799_971_200_000_000_000i64;
        for seed in 0..40 {
            compare::<MINUTE_NS, MINUTES_KEPT>(seed, t0 / MINUTE_NS);
            compare::<HOUR_NS, HOURS_KEPT>(seed, t0 / HOUR_NS);
            compare::<60, 3>(seed, 1_000);
        }
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }
}
