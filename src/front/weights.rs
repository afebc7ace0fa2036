//! REST request weight per IP address and minute (`X-MBX-USED-WEIGHT-1M`), as Binance counts
//! it: each request adds its weight to its address's count for the current clock minute, and
//! a request that would pass `--rest-weight-limit` gets 429 with -1003 instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Addresses remembered before stale minutes are swept; keeps a flood of one-off addresses
/// from growing the table past the addresses of one minute.
const SWEEP_AT: usize = 4096;

/// What one request's weight check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Admitted: the address's weight this minute, this request included.
    Used(u32),
    /// Refused: the weight already used, and the seconds until the minute ends.
    Refused { used: u32, retry_after_s: u64 },
}

/// Weight used per address in the current minute.
pub struct RestWeights {
    limit: u32,
    used: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl RestWeights {
    /// `limit` per minute; 0 counts weight but never refuses.
    pub fn new(limit: u32) -> Self {
        RestWeights {
            limit,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `weight` to `ip` at wall-clock time `now_ms`, unless that would pass the limit.
    pub fn charge(&self, ip: IpAddr, weight: u32, now_ms: u64) -> Charge {
        let minute = now_ms / 60_000;
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if used.len() >= SWEEP_AT {
            used.retain(|_, (at, _)| *at == minute);
        }
        let entry = used.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        let next = entry.1.saturating_add(weight);
        if self.limit > 0 && next > self.limit {
            let retry_after_s = (60_000 - now_ms % 60_000).div_ceil(1000);
            return Charge::Refused {
                used: entry.1,
                retry_after_s,
            };
        }
        entry.1 = next;
        Charge::Used(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_minute() {
        let weights = RestWeights::new(10);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(weights.charge(a, 4, 60_000), Charge::Used(4));
        assert_eq!(weights.charge(a, 6, 60_500), Charge::Used(10));
        assert_eq!(
            weights.charge(a, 1, 61_200),
            Charge::Refused {
                used: 10,
                retry_after_s: 59
            }
        );
        assert_eq!(weights.charge(b, 1, 61_200), Charge::Used(1));
        assert_eq!(
            weights.charge(a, 1, 120_000),
            Charge::Used(1),
            "a new minute"
        );
        assert_eq!(RestWeights::new(0).charge(a, 100, 0), Charge::Used(100));
    }
}
