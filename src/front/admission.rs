//! Who may open a WebSocket connection, decided before the upgrade: the per-IP
//! connection-attempt limit (SPEC.md: 300 attempts per 5 minutes per IP), the per-IP cap on
//! open connections (`--max-connections-per-ip`) and the allowed browser origins
//! (`--allowed-origins`).
//!
//! Attempts use fixed windows per address, in a map that is pruned of expired windows whenever
//! it grows past a size bound, so a scan from many addresses costs bounded memory.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

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

/// Open WebSocket connections per client address (`--max-connections-per-ip`).
///
/// An address's entry exists only while it has connections open, so the map is bounded by
/// the connection cap and needs no pruning.
pub struct IpConnections {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// The address already has `--max-connections-per-ip` connections open.
#[derive(Debug, PartialEq, Eq)]
pub struct AtCapacity;

/// One open connection's place in its address's count. Dropping it gives the place back, so
/// the count cannot leak however the connection ends (error, panic, task abort).
pub struct IpSlot {
    counter: Arc<IpConnections>,
    ip: IpAddr,
}

impl IpConnections {
    /// `limit` 0 disables the cap.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(IpConnections {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for a connection from `ip`: `Ok(None)` when the cap is off, `Err` when
    /// the address already has `limit` connections open.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpSlot>, AtCapacity> {
        if self.limit == 0 {
            return Ok(None);
        }
        // An IPv4 client of a dual-stack listener shows up as ::ffff:a.b.c.d; count it as itself.
        let ip = ip.to_canonical();
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return Err(AtCapacity);
        }
        *count += 1;
        Ok(Some(IpSlot {
            counter: self.clone(),
            ip,
        }))
    }

    /// Connections open from `ip` (0 when the cap is off).
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What an accepted WebSocket connection holds for as long as it is open: its place under
/// `--max-connections` and, when that cap is on, under `--max-connections-per-ip`.
pub struct Slots {
    _total: OwnedSemaphorePermit,
    _per_ip: Option<IpSlot>,
}

impl Slots {
    pub fn new(total: OwnedSemaphorePermit, per_ip: Option<IpSlot>) -> Self {
        Slots {
            _total: total,
            _per_ip: per_ip,
        }
    }
}

/// Normalizes one `--allowed-origins` entry: `scheme://host[:port]`, lower case, no trailing
/// slash, which is how browsers serialize the `Origin` header.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
        !scheme.is_empty() && !host.is_empty() && !host.contains('/')
    });
    if valid {
        Ok(origin)
    } else {
        Err(format!(
            "{text:?} is not an origin; write scheme://host[:port], e.g. https://example.com"
        ))
    }
}

/// Whether a WebSocket upgrade with this `Origin` header may proceed. An empty list allows
/// every origin. A request without the header is allowed: only browsers send it, and the check
/// exists to stop other web pages from using a visitor's browser to connect, not to tell who a
/// non-browser client is (tokens do that). bookcast's own pages (`/dashboard`) are allowed
/// too: an origin naming the very `host` the request was sent to is same-origin.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    match origin {
        _ if allowed.is_empty() => true,
        None => true,
        Some(origin) => {
            let origin = origin.trim();
            let same_origin = host.is_some_and(|host| {
                !host.is_empty()
                    && ["http://", "https://"].iter().any(|scheme| {
                        // Bytes, not str slices: the header may hold any byte, and a cut
                        // inside a multi-byte character would panic.
                        let (origin, scheme, host) =
                            (origin.as_bytes(), scheme.as_bytes(), host.as_bytes());
                        origin.len() == scheme.len() + host.len()
                            && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
                            && origin[scheme.len()..].eq_ignore_ascii_case(host)
                    })
            });
            same_origin || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        }
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

    #[test]
    fn connection_cap_per_address_frees_on_drop() {
        let cap = IpConnections::new(2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = cap.acquire(a).unwrap();
        let second = cap.acquire(a).unwrap();
        assert!(cap.acquire(a).is_err(), "third from one address");
        assert!(cap.acquire(b).is_ok(), "other addresses are unaffected");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(
            cap.acquire(mapped).is_err(),
            "IPv4-mapped counts as the IPv4 address"
        );
        drop(first);
        assert_eq!(cap.open(a), 1);
        let third = cap.acquire(a).unwrap();
        drop((second, third));
        assert_eq!(cap.open(a), 0);
        assert!(
            cap.open.lock().is_empty(),
            "no entry stays for closed addresses"
        );
        let off = IpConnections::new(0);
        assert!(
            (0..1000).all(|_| matches!(off.acquire(a), Ok(None))),
            "0 disables"
        );
    }

    #[test]
    fn origins_parse_and_match() {
        assert_eq!(
            parse_origin("https://Example.com/").unwrap(),
            "https://example.com"
        );
        assert_eq!(
            parse_origin(" http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        for bad in [
            "",
            "example.com",
            "https://",
            "https://example.com/app",
            "*",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
        let allowed = vec![
            "https://example.com".to_string(),
            "http://localhost:8080".to_string(),
        ];
        assert!(origin_allowed_(&allowed, Some("https://example.com")));
        assert!(origin_allowed_(&allowed, Some("HTTPS://EXAMPLE.COM")));
        assert!(origin_allowed_(&allowed, Some("http://localhost:8080")));
        assert!(origin_allowed_(&allowed, None), "no Origin: not a browser");
        for other in [
            "https://evil.example",
            "http://example.com",
            "http://localhost:8081",
            "null",
            "https://example.com, https://evil.example",
        ] {
            assert!(!origin_allowed_(&allowed, Some(other)), "{other}");
        }
        assert!(
            origin_allowed_(&[], Some("https://evil.example")),
            "empty list: off"
        );
        // Same-origin (bookcast's own /dashboard), whatever the list says.
        let host = Some("127.0.0.1:9443");
        assert!(origin_allowed(
            &allowed,
            Some("http://127.0.0.1:9443"),
            host
        ));
        assert!(origin_allowed(
            &allowed,
            Some("https://127.0.0.1:9443"),
            host
        ));
        assert!(!origin_allowed(
            &allowed,
            Some("http://127.0.0.1:9444"),
            host
        ));
        assert!(!origin_allowed(
            &allowed,
            Some("http://127.0.0.1:9443.evil"),
            host
        ));
        assert!(!origin_allowed(&allowed, Some("http://"), Some("")));
        // Same length as "http://" + host, with a multi-byte character across the cut.
        assert!(!origin_allowed(
            &allowed,
            Some("http:/\u{e9}abc"),
            Some("abcd")
        ));
        assert!(!origin_allowed(
            &allowed,
            Some("http://ab\u{e9}"),
            Some("abcd")
        ));
    }

    fn origin_allowed_(allowed: &[String], origin: Option<&str>) -> bool {
        origin_allowed(allowed, origin, None)
    }

    proptest::proptest! {
        /// Whatever the order of connects and disconnects, an address never holds more than
        /// the limit, and once every connection is gone nothing is left counted.
        #[test]
        fn never_over_the_cap_never_leaks(
            ops in proptest::collection::vec((0u8..3, proptest::bool::ANY), 0..200),
            limit in 1usize..4,
        ) {
            let cap = IpConnections::new(limit);
            let mut held: Vec<Vec<IpSlot>> = vec![Vec::new(), Vec::new(), Vec::new()];
            for (address, connect) in ops {
                let ip = IpAddr::from([127, 0, 0, address + 1]);
                let slots = &mut held[usize::from(address)];
                if connect {
                    match cap.acquire(ip) {
                        Ok(slot) => slots.push(slot.expect("cap is on")),
                        Err(AtCapacity) => proptest::prop_assert_eq!(slots.len(), limit),
                    }
                } else {
                    slots.pop();
                }
                proptest::prop_assert_eq!(cap.open(ip), slots.len());
                proptest::prop_assert!(slots.len() <= limit);
            }
            drop(held);
            proptest::prop_assert!(cap.open.lock().is_empty());
        }
    }
}
