//! Failed authentications, limited per peer: a token bucket per IP address (an IPv6 address counts
//! by its /64, what one host usually gets), in a bounded map.
//!
//! Each failed authentication (a token or JWT presented and refused) takes one unit from the
//! peer's bucket; the bucket holds `burst` units and regains one every `refill`. A peer whose
//! bucket is empty is refused before its credentials are looked at (the admin API answers `429`
//! with `Retry-After`, the sync hub refuses the `Subscribe`), so guessing tokens costs time.
//! Successful authentications take nothing. The map never holds more than [`MAX_PEERS`] peers:
//! when full, peers whose bucket has refilled are forgotten first (they owe nothing), then the
//! peer closest to being forgiven.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most peers tracked at once (a few MiB at most).
pub const MAX_PEERS: usize = 65_536;

/// The limiter; `burst` 0 switches it off.
pub struct FailureLimiter {
    burst: f64,
    refill: Duration,
    max_peers: usize,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Units left at `at`.
    units: f64,
    at: Instant,
}

impl FailureLimiter {
    /// A limiter allowing `burst` failures, regaining one every `refill`.
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self::with_capacity(burst, refill, MAX_PEERS)
    }

    /// [`FailureLimiter::new`] tracking at most `max_peers` peers.
    pub fn with_capacity(burst: u32, refill: Duration, max_peers: usize) -> Self {
        FailureLimiter {
            burst: f64::from(burst),
            refill: refill.max(Duration::from_millis(1)),
            max_peers: max_peers.max(1),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the limit is on.
    pub fn enabled(&self) -> bool {
        self.burst > 0.0
    }

    /// `Err(retry_after)` when `peer` has no failure left to spend: refuse it without looking at
    /// its credentials.
    pub fn check(&self, peer: IpAddr) -> Result<(), Duration> {
        self.check_at(peer, Instant::now())
    }

    /// Records a failed authentication of `peer`.
    pub fn failed(&self, peer: IpAddr) {
        self.failed_at(peer, Instant::now());
    }

    fn check_at(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = peers.get(&key(peer)) else {
            return Ok(());
        };
        let units = self.units(bucket, now);
        if units >= 1.0 {
            Ok(())
        } else {
            Err(self.refill.mul_f64(1.0 - units))
        }
    }

    fn failed_at(&self, peer: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let peer = key(peer);
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !peers.contains_key(&peer) && peers.len() >= self.max_peers {
            self.make_room(&mut peers, now);
        }
        let units = peers.get(&peer).map_or(self.burst, |b| self.units(b, now));
        peers.insert(
            peer,
            Bucket {
                units: (units - 1.0).max(0.0),
                at: now,
            },
        );
    }

    /// Units of `bucket` at `now`, refilled since it was last touched.
    fn units(&self, bucket: &Bucket, now: Instant) -> f64 {
        let regained =
            now.saturating_duration_since(bucket.at).as_secs_f64() / self.refill.as_secs_f64();
        (bucket.units + regained).min(self.burst)
    }

    fn make_room(&self, peers: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        peers.retain(|_, b| self.units(b, now) < self.burst);
        if peers.len() >= self.max_peers
            && let Some(forgiven) = peers
                .iter()
                .max_by(|a, b| self.units(a.1, now).total_cmp(&self.units(b.1, now)))
                .map(|(k, _)| *k)
        {
            peers.remove(&forgiven);
        }
    }

    /// How many peers are tracked.
    pub fn tracked(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// What counts as one peer: an IPv4 address (also written IPv4-mapped), an IPv6 /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_peer_gets_its_burst_then_waits_for_the_refill() {
        let l = FailureLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(l.check_at(a, t0), Ok(()));
            l.failed_at(a, t0);
        }
        assert_eq!(l.check_at(a, t0), Err(Duration::from_secs(10)));
        // Another peer is not affected.
        assert_eq!(l.check_at(ip("192.0.2.2"), t0), Ok(()));
        // Half a refill later: 5 s to wait; a whole one: one more try.
        let t = t0 + Duration::from_secs(5);
        assert_eq!(l.check_at(a, t), Err(Duration::from_secs(5)));
        let t = t0 + Duration::from_secs(10);
        assert_eq!(l.check_at(a, t), Ok(()));
        l.failed_at(a, t);
        assert!(l.check_at(a, t).is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let l = FailureLimiter::new(1, Duration::from_secs(60));
        l.failed(ip("2001:db8:1:2::1"));
        assert!(l.check(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(l.check(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        l.failed(ip("::ffff:198.51.100.7"));
        assert!(l.check(ip("198.51.100.7")).is_err());
    }

    #[test]
    fn the_map_stays_bounded_and_forgets_the_forgiven_first() {
        let l = FailureLimiter::with_capacity(2, Duration::from_secs(1), 4);
        let t0 = Instant::now();
        // One peer that spent everything, three that failed once.
        let bad = ip("203.0.113.1");
        l.failed_at(bad, t0);
        l.failed_at(bad, t0);
        for i in 2..5 {
            l.failed_at(ip(&format!("203.0.113.{i}")), t0);
        }
        assert_eq!(l.tracked(), 4);
        // A new peer at once: the one closest to forgiven goes, never the one that owes most.
        l.failed_at(ip("203.0.113.9"), t0);
        assert_eq!(l.tracked(), 4);
        assert!(l.check_at(bad, t0).is_err());
        // Later, refilled peers are dropped to make room.
        let t = t0 + Duration::from_millis(1500);
        l.failed_at(ip("203.0.113.10"), t);
        assert!(l.tracked() <= 4);
        for i in 0..1000 {
            l.failed_at(ip(&format!("10.0.{}.{}", i / 256, i % 256)), t);
        }
        assert_eq!(l.tracked(), 4);
    }

    #[test]
    fn burst_zero_switches_it_off() {
        let l = FailureLimiter::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            l.failed(ip("192.0.2.1"));
        }
        assert_eq!(l.check(ip("192.0.2.1")), Ok(()));
        assert_eq!(l.tracked(), 0);
    }
}
