//! Where the load goes: URL checks (loopback only unless allowed), the feed's symbols from
//! `/api/v3/exchangeInfo`, and stream lists per client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server to load: its socket address and the URL prefix for WebSocket paths.
pub struct Target {
    pub addr: SocketAddr,
    pub base: String,
}

/// Parses `ws://host:port[/...]` and refuses anything outside 127.0.0.0/8 and ::1 unless
/// `allow_remote`: a load test is an attack on anyone else's server.
pub fn parse(url: &str, allow_remote: bool) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{url}: cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {authority} resolves to nothing"))?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(format!(
            "{url}: {} is not a loopback address; load tests target 127.0.0.0/8 or ::1 unless --allow-remote is given",
            addr.ip()
        ));
    }
    Ok(Target {
        addr,
        base: format!("ws://{authority}"),
    })
}

/// Loopback source addresses the load can use: 127.0.0.1 to 127.0.0.250.
pub const SOURCE_ADDRESSES: usize = 250;

/// bookcast's default limit of WebSocket connection attempts per client IP per 5 minutes
/// (SPEC.md, "Limits and lifecycle"; `--max-connection-attempts-per-ip`).
pub const SERVER_ATTEMPTS_PER_IP: usize = 300;

/// Connections per loopback source address unless `--per-source-address` says otherwise: a
/// third of [`SERVER_ATTEMPTS_PER_IP`], so a server on its defaults admits every client of a
/// run, and of the next two if they start within its 5-minute window, with room for other
/// clients on 127.0.0.1.
pub const DEFAULT_PER_SOURCE_ADDRESS: usize = 100;

/// Connections per source address: `given`, or [`DEFAULT_PER_SOURCE_ADDRESS`] unless
/// `clients` need more than the addresses from `offset` on can hold at that rate; then as few
/// as fit. `processes` load processes each round their share up to whole addresses, which
/// can take one more address each but the first.
pub fn per_source_address(
    given: Option<usize>,
    clients: usize,
    processes: usize,
    offset: u8,
) -> usize {
    if let Some(given) = given {
        return given.max(1);
    }
    let addresses = SOURCE_ADDRESSES
        .saturating_sub(usize::from(offset))
        .saturating_sub(processes.saturating_sub(1))
        .max(1);
    DEFAULT_PER_SOURCE_ADDRESS.max(clients.div_ceil(addresses))
}

/// The warning to print when each loopback source address of the run opens more WebSocket
/// connections than a default bookcast admits from one address.
pub fn per_address_warning(target: &Target, per_address: usize, clients: usize) -> Option<String> {
    let over = target.addr.ip().is_loopback() && per_address.min(clients) > SERVER_ATTEMPTS_PER_IP;
    over.then(|| {
        format!(
            "note: up to {per_address} connections per loopback source address; a bookcast on \
             its defaults admits {SERVER_ATTEMPTS_PER_IP} attempts per address per 5 minutes \
             (start it with --max-connection-attempts-per-ip 0 for this run)"
        )
    })
}

/// Source addresses to spread connections over, so ephemeral ports never run out and each
/// stays under the server's per-IP limits (see [`per_source_address`]): on loopback
/// each of 127.0.0.(1 + offset), .(2 + offset), ... carries at most `per_address` connections.
/// Several load processes side by side take different offsets, so they never share a port range.
pub fn sources(
    target: &Target,
    clients: usize,
    per_address: usize,
    offset: u8,
) -> Vec<Option<IpAddr>> {
    match target.addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let count = clients.div_ceil(per_address.max(1)).max(1);
            (0..count)
                .map(|i| {
                    let last = 1 + (usize::from(offset) + i) % SOURCE_ADDRESSES;
                    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last as u8)))
                })
                .collect()
        }
        _ => vec![None],
    }
}

/// The symbols the server lists in `/api/v3/exchangeInfo`, lower-cased for stream names.
pub async fn symbols(target: &Target) -> Result<Vec<String>, String> {
    let body = http_get(target.addr, "/api/v3/exchangeInfo").await?;
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("exchangeInfo: {e}"))?;
    let symbols: Vec<String> = value["symbols"]
        .as_array()
        .ok_or("exchangeInfo: no symbols array")?
        .iter()
        .filter_map(|s| s["symbol"].as_str().map(str::to_lowercase))
        .collect();
    if symbols.is_empty() {
        return Err("exchangeInfo lists no symbols".into());
    }
    Ok(symbols)
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&raw) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(format!("GET {path}: malformed response")),
        };
        if response.code != Some(200) {
            return Err(format!("GET {path}: status {:?}", response.code));
        }
        Ok(String::from_utf8_lossy(&raw[head..]).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| format!("GET {path}: timed out"))?
}

/// The streams client `index` subscribes to: each comma-separated pattern with `<sym>` takes
/// `per_client` symbols round-robin; names without `<sym>` go to every client as they are.
pub fn streams_for(
    index: usize,
    patterns: &str,
    symbols: &[String],
    per_client: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for pattern in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if pattern.contains("<sym>") {
            for k in 0..per_client.max(1) {
                let symbol = &symbols[(index * per_client.max(1) + k) % symbols.len()];
                out.push(pattern.replace("<sym>", symbol));
            }
        } else {
            out.push(pattern.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On defaults each address stays at 100 (a default bookcast admits 300 per 5 minutes)
    /// while the 250 addresses can hold the clients at that rate; past that, as few as fit.
    #[test]
    fn default_spread_keeps_addresses_under_the_servers_limit() {
        assert_eq!(per_source_address(None, 2000, 1, 0), 100);
        assert_eq!(per_source_address(None, 25_000, 1, 0), 100);
        assert_eq!(per_source_address(None, 38_000, 2, 0), 153);
        assert_eq!(per_source_address(None, 100, 1, 249), 100);
        assert_eq!(per_source_address(None, 1000, 1, 249), 1000);
        assert_eq!(per_source_address(Some(5000), 2000, 1, 0), 5000);
        assert_eq!(per_source_address(Some(0), 2000, 1, 0), 1);
        let target = parse("ws://127.0.0.1:9443", false).unwrap();
        let spread = sources(&target, 2000, per_source_address(None, 2000, 1, 0), 0);
        assert_eq!(spread.len(), 20);
        assert_eq!(spread[19], Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20))));
        assert!(per_address_warning(&target, 100, 2000).is_none());
        assert!(per_address_warning(&target, 5000, 200).is_none());
        assert!(per_address_warning(&target, 5000, 2000).is_some());
    }

    #[test]
    fn refuses_remote_targets_unless_allowed() {
        assert!(parse("ws://127.0.0.1:9443", false).is_ok());
        assert!(parse("ws://127.0.0.9:9443/ws", false).is_ok());
        assert!(parse("ws://[::1]:9443", false).is_ok());
        assert!(parse("ws://10.0.0.1:9443", false).is_err());
        assert!(parse("ws://10.0.0.1:9443", true).is_ok());
        assert!(parse("http://127.0.0.1:9443", false).is_err());
    }

    #[test]
    fn patterns_spread_over_symbols() {
        let symbols: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(streams_for(0, "<sym>@depth", &symbols, 1), ["a@depth"]);
        assert_eq!(streams_for(4, "<sym>@depth", &symbols, 1), ["b@depth"]);
        assert_eq!(
            streams_for(1, "<sym>@depth,<sym>@trade", &symbols, 2),
            ["c@depth", "a@depth", "c@trade", "a@trade"]
        );
        assert_eq!(
            streams_for(7, "btcusdt@trade", &symbols, 1),
            ["btcusdt@trade"]
        );
    }

    #[test]
    fn sources_cap_connections_per_address() {
        let target = parse("ws://127.0.0.1:9443", false).unwrap();
        assert_eq!(sources(&target, 100, 10_000, 0).len(), 1);
        let many = sources(&target, 25_000, 10_000, 0);
        assert_eq!(many.len(), 3);
        assert_eq!(many[2], Some("127.0.0.3".parse().unwrap()));
        let second_process = sources(&target, 19_000, 10_000, 2);
        assert_eq!(
            second_process,
            [
                Some("127.0.0.3".parse().unwrap()),
                Some("127.0.0.4".parse().unwrap())
            ]
        );
    }
}
