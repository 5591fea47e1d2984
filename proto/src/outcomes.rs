//! The buckets of `vexil.sync.v1.Outcomes` (guarded rollouts): what the sidecar counts and control
//! reads, defined once so both sides agree on every bound.

use std::time::Duration;

/// Status classes: 1xx, 2xx, 3xx, 4xx, 5xx, and no answer.
pub const STATUS_CLASSES: usize = 6;

/// The class of a request the upstream did not answer (refused, reset, timed out).
pub const NO_ANSWER: usize = 5;

/// The class of a 5xx answer.
pub const SERVER_ERROR: usize = 4;

/// Latency buckets: bucket `k` holds the times in `[bound(k - 1), bound(k))`, `bound(k)` =
/// 1 ms · 1.5^k, bucket 0 from 0; the last holds everything from `bound(30)` (about 192 s) on.
pub const LATENCY_BUCKETS: usize = 32;

/// Counters of one decision's outcomes: the status classes, then the latency buckets.
pub const COUNTERS: usize = STATUS_CLASSES + LATENCY_BUCKETS;

/// The upper bounds of buckets 0..=30 in microseconds (the last bucket has none).
const BOUNDS_US: [u64; LATENCY_BUCKETS - 1] = {
    let mut bounds = [0u64; LATENCY_BUCKETS - 1];
    let mut b = 1000.0f64;
    let mut k = 0;
    while k < bounds.len() {
        bounds[k] = b as u64;
        b *= 1.5;
        k += 1;
    }
    bounds
};

/// The class of an answer with HTTP status `status` (`None`: no answer). A status outside
/// 100..=599 counts as no answer.
pub fn status_class(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100 - 1),
        _ => NO_ANSWER,
    }
}

/// The bucket of a latency.
pub fn latency_bucket(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    BOUNDS_US.partition_point(|&b| b <= us)
}

/// The lower bound of bucket `k` (0 for bucket 0).
pub fn lower_bound(k: usize) -> Duration {
    match k {
        0 => Duration::ZERO,
        k => Duration::from_micros(BOUNDS_US[(k - 1).min(BOUNDS_US.len() - 1)]),
    }
}

/// The upper bound of bucket `k`; `None` for the last bucket, which has none.
pub fn upper_bound(k: usize) -> Option<Duration> {
    BOUNDS_US.get(k).map(|&us| Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_half() {
        assert_eq!(latency_bucket(Duration::ZERO), 0);
        assert_eq!(latency_bucket(Duration::from_micros(999)), 0);
        assert_eq!(latency_bucket(Duration::from_millis(1)), 1);
        assert_eq!(latency_bucket(Duration::from_micros(1499)), 1);
        assert_eq!(latency_bucket(Duration::from_micros(1500)), 2);
        assert_eq!(
            latency_bucket(Duration::from_secs(100_000)),
            LATENCY_BUCKETS - 1
        );
        for k in 0..LATENCY_BUCKETS {
            let lo = lower_bound(k);
            assert_eq!(latency_bucket(lo), k, "bucket {k} starts at {lo:?}");
            if let Some(hi) = upper_bound(k) {
                assert!(hi > lo);
                assert_eq!(latency_bucket(hi - Duration::from_micros(1)), k);
            }
        }
        assert!(upper_bound(30).unwrap() > Duration::from_secs(190));
        assert!(upper_bound(31).is_none());
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(Some(101)), 0);
        assert_eq!(status_class(Some(200)), 1);
        assert_eq!(status_class(Some(503)), SERVER_ERROR);
        assert_eq!(status_class(Some(600)), NO_ANSWER);
        assert_eq!(status_class(Some(0)), NO_ANSWER);
        assert_eq!(status_class(None), NO_ANSWER);
    }
}
