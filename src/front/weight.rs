//! Request weight per client address, in Binance's `REQUEST_WEIGHT` windows: each request costs
//! its endpoint's weight, an address may spend [`REQUEST_WEIGHT_PER_MINUTE`] per calendar
//! minute, and a request past that is refused with 429 -1003 until the next minute starts.
//!
//! Binance counts the REST API and the WebSocket API against the same per-IP budget, so one
//! limiter belongs in [`super::context::Context`] for both. Windows are calendar minutes of
//! wall-clock time (not a sliding window) because that is what Binance's `rateLimits` report
//! and what its `retryAfter` points at: the start of the next minute.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;

/// SPEC.md: 6000 weight per minute per IP (the value `/api/v3/exchangeInfo` advertises).
pub const REQUEST_WEIGHT_PER_MINUTE: u32 = 6000;

/// Addresses tracked before entries of past minutes are pruned.
const PRUNE_ABOVE: usize = 16_384;

/// What charging one request left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    /// False: the request is over the limit and must be refused (its weight was not spent).
    pub admitted: bool,
    /// Weight this address has used in the current minute, this request included if admitted:
    /// the `count` of Binance's `rateLimits` and `X-MBX-USED-WEIGHT-1M`.
    pub used: u32,
    /// The limit the count is measured against.
    pub limit: u32,
    /// Wall-clock milliseconds at which the next window opens (Binance's `retryAfter`).
    pub retry_after_ms: u64,
}

pub struct WeightLimiter {
    limit: u32,
    /// Per address: the minute (wall-clock ms / 60000) its count belongs to, and the count.
    used: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl WeightLimiter {
    pub fn new(limit: u32) -> Self {
        WeightLimiter {
            limit,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Spends `weight` for `ip` now, unless that would pass the limit.
    pub fn charge(&self, ip: IpAddr, weight: u32) -> Charge {
        self.charge_at(ip, weight, crate::clock::wall_us() / 1000)
    }

    fn charge_at(&self, ip: IpAddr, weight: u32, now_ms: u64) -> Charge {
        let minute = now_ms / 60_000;
        let mut used = self.used.lock();
        if used.len() > PRUNE_ABOVE {
            used.retain(|_, (m, _)| *m == minute);
        }
        let entry = used.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        let after = entry.1.saturating_add(weight);
        let admitted = after <= self.limit;
        if admitted {
            entry.1 = after;
        }
        Charge {
            admitted,
            used: entry.1,
            limit: self.limit,
            retry_after_ms: (minute + 1) * 60_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_up_to_the_limit_then_refuses_until_the_next_minute() {
        let limiter = WeightLimiter::new(10);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        let t = 5 * 60_000 + 59_000;
        assert!(limiter.charge_at(ip, 6, t).admitted);
        let refused = limiter.charge_at(ip, 5, t);
        assert_eq!((refused.admitted, refused.used), (false, 6));
        assert_eq!(refused.retry_after_ms, 6 * 60_000);
        assert_eq!(limiter.charge_at(ip, 4, t).used, 10);
        assert!(limiter.charge_at(other, 10, t).admitted, "per address");
        let next = limiter.charge_at(ip, 5, 6 * 60_000);
        assert_eq!((next.admitted, next.used), (true, 5));
    }
}
