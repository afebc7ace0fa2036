//! Per-IP connection-attempt limiting (SPEC.md: 300 attempts per 5 minutes per IP).
//!
//! Fixed windows per address, in a map that is pruned of expired windows whenever it grows past
//! a size bound, so a scan from many addresses costs bounded memory.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses tracked before expired windows are pruned.
const PRUNE_ABOVE: usize = 16_384;

pub struct AttemptLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AttemptLimiter {
    /// `limit` 0 disables the limiter.
    pub fn new(limit: u32, window: Duration) -> Self {
        AttemptLimiter {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Records an attempt from `ip`; false when it is over the limit.
    pub fn admit(&self, ip: IpAddr) -> bool {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut windows = self.windows.lock();
        if windows.len() > PRUNE_ABOVE {
            let window = self.window;
            windows.retain(|_, (started, _)| now.duration_since(*started) < window);
        }
        let (started, count) = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*started) >= self.window {
            *started = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        *count <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_per_window() {
        let limiter = AttemptLimiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.admit_at(a, t0)));
        assert!(!limiter.admit_at(a, t0));
        assert!(limiter.admit_at(b, t0), "other addresses are unaffected");
        assert!(
            limiter.admit_at(a, t0 + Duration::from_secs(61)),
            "a new window starts"
        );
        assert!(
            AttemptLimiter::new(0, Duration::from_secs(1)).admit_at(a, t0),
            "0 disables"
        );
    }
}
