//! A keyed token bucket: so many attempts per minute per client address,
//! and so many from all addresses together. It throttles `POST /v1/enroll`,
//! so one-time codes cannot be guessed at the network's speed.
//!
//! Each attempt takes a token from its address's bucket and one from the
//! global bucket, both or neither; buckets refill steadily, a full minute's
//! worth at most. An attempt that succeeded is given back
//! ([`Throttle::give_back`]), so a room of surveyors enrolling behind one
//! address is never held up by its own success; only failures add up.
//!
//! Time is handed in (`now`), so the arithmetic is tested without waiting.
//! Memory stays bounded: an address gets a bucket only when the global
//! bucket lets it in, and [`Throttle::forget_full`] drops the buckets that
//! refilled (nothing to remember about them).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The period the rates are counted over.
pub const PERIOD: Duration = Duration::from_secs(60);

/// One bucket: tokens as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: u32, now: Instant) -> Self {
        Self { tokens: f64::from(capacity), at: now }
    }

    /// Tokens now, after refilling `capacity` per [`PERIOD`] since `at`.
    fn refill(&mut self, capacity: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = f64::from(capacity) / PERIOD.as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(capacity));
        self.at = now.max(self.at);
    }

    /// How long until one whole token is there (zero if it is).
    fn wait(&self, capacity: u32) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        if capacity == 0 {
            return PERIOD;
        }
        let rate = f64::from(capacity) / PERIOD.as_secs_f64();
        Duration::from_secs_f64((1.0 - self.tokens) / rate)
    }
}

/// Attempts per key and in total, each per [`PERIOD`].
#[derive(Debug)]
pub struct Throttle<K> {
    per_key: u32,
    global_capacity: u32,
    global: Option<Bucket>,
    keys: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    /// `per_key` attempts per minute for each key, `global` for all keys together.
    pub fn new(per_key: u32, global: u32) -> Self {
        Self { per_key, global_capacity: global, global: None, keys: HashMap::new() }
    }

    /// Takes an attempt for `key`, or says how long until one is allowed.
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        let global = self.global.get_or_insert_with(|| Bucket::full(self.global_capacity, now));
        global.refill(self.global_capacity, now);
        let mut own = self.keys.get(key).copied().unwrap_or_else(|| Bucket::full(self.per_key, now));
        own.refill(self.per_key, now);
        let wait = global.wait(self.global_capacity).max(own.wait(self.per_key));
        if !wait.is_zero() {
            if self.keys.contains_key(key) {
                self.keys.insert(key.clone(), own);
            }
            return Err(wait);
        }
        global.tokens -= 1.0;
        own.tokens -= 1.0;
        self.keys.insert(key.clone(), own);
        Ok(())
    }

    /// Gives back an attempt `key` took (it succeeded).
    pub fn give_back(&mut self, key: &K, now: Instant) {
        if let Some(global) = &mut self.global {
            global.refill(self.global_capacity, now);
            global.tokens = (global.tokens + 1.0).min(f64::from(self.global_capacity));
        }
        if let Some(own) = self.keys.get_mut(key) {
            own.refill(self.per_key, now);
            own.tokens = (own.tokens + 1.0).min(f64::from(self.per_key));
        }
    }

    /// Drops the buckets that have refilled by `now`; returns how many.
    pub fn forget_full(&mut self, now: Instant) -> usize {
        let before = self.keys.len();
        let per_key = self.per_key;
        self.keys.retain(|_, b| {
            b.refill(per_key, now);
            b.tokens < f64::from(per_key)
        });
        before - self.keys.len()
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key of a client address: an IPv4 address, or the /64 network of an
/// IPv6 address (one subscriber usually holds a whole /64). An IPv4 address
/// written as IPv6 counts as the IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// `Retry-After` seconds for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_quota_then_waits_for_the_refill() {
        let t0 = Instant::now();
        let mut t = Throttle::new(10, 300);
        for _ in 0..10 {
            assert_eq!(t.take(&"a", t0), Ok(()));
        }
        let wait = t.take(&"a", t0).unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(6), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 6);
        // Another address is not held up.
        assert_eq!(t.take(&"b", t0), Ok(()));
        // One token every 6 s.
        assert!(t.take(&"a", t0 + Duration::from_secs(5)).is_err());
        assert_eq!(t.take(&"a", t0 + Duration::from_millis(6500)), Ok(()));
        assert!(t.take(&"a", t0 + Duration::from_secs(7)).is_err());
    }

    #[test]
    fn the_global_ceiling_holds_across_keys() {
        let t0 = Instant::now();
        let mut t = Throttle::new(10, 25);
        let ok = (0..40u32).filter(|k| t.take(k, t0).is_ok() && t.take(k, t0).is_ok()).count();
        assert_eq!(ok, 12, "25 attempts: 12 keys twice, the 13th once");
        assert!(t.take(&99, t0).is_err());
        // A refused new key leaves nothing behind.
        assert_eq!(t.len(), 13);
        assert_eq!(t.take(&99, t0 + Duration::from_secs(3)), Ok(()));
    }

    #[test]
    fn success_gives_its_attempt_back() {
        let t0 = Instant::now();
        let mut t = Throttle::new(3, 300);
        for _ in 0..50 {
            t.take(&"office", t0).unwrap();
            t.give_back(&"office", t0);
        }
        for _ in 0..3 {
            t.take(&"office", t0).unwrap();
        }
        assert!(t.take(&"office", t0).is_err());
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Throttle::new(10, 300);
        t.take(&"a", t0).unwrap();
        t.take(&"b", t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(t.forget_full(t0 + Duration::from_secs(10)), 1, "a refilled after 6 s");
        assert_eq!(t.len(), 1);
        assert_eq!(t.forget_full(t0 + Duration::from_secs(60)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn addresses_are_keyed_by_v4_or_v6_network() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
