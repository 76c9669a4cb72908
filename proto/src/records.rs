//! Counting what a batch carries. "Results" are probe results and host
//! facts; gap records, scheduler-lag notices (and records of a kind this
//! version does not know) are not results. The
//! spool, the batcher and the collector all count the same way through
//! these two functions.

use crate::v1::{Record, record};

/// Probe results among `records`.
pub fn results(records: &[Record]) -> usize {
    records
        .iter()
        .filter(|r| {
            !matches!(
                r.kind,
                Some(record::Kind::Gap(_) | record::Kind::Lag(_)) | None
            )
        })
        .count()
}

/// Results reported dropped by the gap records among `records`.
pub fn gapped(records: &[Record]) -> u64 {
    records
        .iter()
        .filter_map(|r| match &r.kind {
            Some(record::Kind::Gap(g)) => Some(g.dropped),
            _ => None,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Gap, PingResult, SchedulerLag};

    #[test]
    fn counts_results_and_gaps_apart() {
        let gap = |n| Record {
            kind: Some(record::Kind::Gap(Gap {
                dropped: n,
                ..Gap::default()
            })),
        };
        let ping = Record {
            kind: Some(record::Kind::Ping(PingResult::default())),
        };
        let lag = Record {
            kind: Some(record::Kind::Lag(SchedulerLag::default())),
        };
        let records = vec![
            gap(5),
            ping.clone(),
            Record { kind: None },
            lag,
            ping,
            gap(2),
        ];
        assert_eq!((results(&records), gapped(&records)), (2, 7));
    }
}
