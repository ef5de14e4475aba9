//! How long the log's commit syncs (`fdatasync`) take: counters and a fixed-bucket
//! histogram kept with atomics, read by [`Store::sync_stats`](crate::Store::sync_stats)
//! (the server's `/metrics` exports them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, in microseconds (a last bucket counts the
/// syncs slower than all of them).
pub const SYNC_BUCKET_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// The log's sync timings, updated by the syncing thread, read by anyone.
#[derive(Debug, Default)]
pub(crate) struct SyncTimes {
    count: AtomicU64,
    total_ns: AtomicU64,
    /// Syncs per bucket (not cumulative), the last one past every bound.
    buckets: [AtomicU64; SYNC_BUCKET_BOUNDS_US.len() + 1],
}

impl SyncTimes {
    /// Counts one sync that took `elapsed`.
    pub(crate) fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = SYNC_BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.total_ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures so far.
    pub(crate) fn stats(&self) -> SyncStats {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(SYNC_BUCKET_BOUNDS_US.len());
        for (bound, count) in SYNC_BUCKET_BOUNDS_US.iter().zip(&self.buckets) {
            cumulative = cumulative.saturating_add(count.load(Ordering::Relaxed));
            buckets.push((*bound, cumulative));
        }
        SyncStats {
            count: self.count.load(Ordering::Relaxed),
            total: Duration::from_nanos(self.total_ns.load(Ordering::Relaxed)),
            buckets_us: buckets,
        }
    }
}

/// The store's commit syncs since it opened (see
/// [`Store::sync_stats`](crate::Store::sync_stats)): a histogram of how long each took.
/// Read without locks, so the fields may be a sync apart from each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStats {
    /// Syncs made.
    pub count: u64,
    /// Their time added up.
    pub total: Duration,
    /// `(upper bound in microseconds, syncs that took at most that long)`, cumulative, in
    /// the order of [`SYNC_BUCKET_BOUNDS_US`]; `count` covers the slower ones too.
    pub buckets_us: Vec<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_land_in_cumulative_buckets_by_their_duration() {
        let times = SyncTimes::default();
        times.record(Duration::from_micros(40));
        times.record(Duration::from_micros(100));
        times.record(Duration::from_millis(3));
        times.record(Duration::from_secs(5));
        let stats = times.stats();
        assert_eq!(stats.count, 4);
        assert_eq!(
            stats.total,
            Duration::from_micros(40 + 100 + 3_000 + 5_000_000)
        );
        let at = |bound: u64| {
            stats
                .buckets_us
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(at(50), Some(1));
        assert_eq!(at(100), Some(2), "a bound is inclusive");
        assert_eq!(at(2_500), Some(2));
        assert_eq!(at(5_000), Some(3));
        assert_eq!(at(1_000_000), Some(3), "five seconds is past every bound");
    }
}
