//! Where the load goes: URL checks (loopback only unless allowed), which URL each client
//! takes, the feed's symbols from `/api/v3/exchangeInfo`, and stream lists per client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The server to load: its socket address and the URL prefix for WebSocket paths.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub base: String,
    /// The URL as given, naming the target in the report's per-URL breakdown.
    pub url: String,
}

impl Target {
    /// Whether connections to it bind a 127.0.0.x source address (see [`sources`]): only an
    /// IPv4 loopback target can be reached from one.
    pub fn binds_loopback_source(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
    }
}

/// Parses `--url`: one URL or a comma-separated list, each held to [`parse`]'s rule. An empty
/// entry is refused rather than skipped, since `a,,b` or a trailing comma is more likely a
/// mistake than a wish. The same URL may appear more than once: it then takes that many shares
/// of the clients.
pub fn parse_list(urls: &str, allow_remote: bool) -> Result<Vec<Target>, String> {
    urls.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, url)| {
            if url.is_empty() {
                Err(format!(
                    "--url {urls}: entry {} is empty; give comma-separated ws:// URLs",
                    i + 1
                ))
            } else {
                parse(url, allow_remote)
            }
        })
        .collect()
}

/// Which of `urls` targets client `client` (its id over the whole run, across --processes):
/// round-robin, so the clients spread evenly however they are split between processes.
pub fn url_index(client: usize, urls: usize) -> usize {
    client % urls.max(1)
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
        url: url.to_string(),
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
/// connections than a default bookcast admits from one address. With several URLs each server
/// sees only its share, but the same server may be listed twice: the warning stays on the
/// safe side and counts them all.
pub fn per_address_warning(
    targets: &[Target],
    per_address: usize,
    clients: usize,
) -> Option<String> {
    let over = targets.iter().any(|t| t.addr.ip().is_loopback())
        && per_address.min(clients) > SERVER_ATTEMPTS_PER_IP;
    over.then(|| {
        format!(
            "note: up to {per_address} connections per loopback source address; a bookcast on \
             its defaults admits {SERVER_ATTEMPTS_PER_IP} attempts per address per 5 minutes \
             (start it with --max-connection-attempts-per-ip 0 for this run)"
        )
    })
}

/// Source addresses to spread connections over, so ephemeral ports never run out and each
/// stays under the server's per-IP limits (see [`per_source_address`]): when any target is
/// IPv4 loopback, each of 127.0.0.(1 + offset), .(2 + offset), ... carries at most
/// `per_address` connections. Several load processes side by side take different offsets, so
/// they never share a port range. Connections to other targets pick no source
/// ([`source_for`]).
pub fn sources(
    targets: &[Target],
    clients: usize,
    per_address: usize,
    offset: u8,
) -> Vec<Option<IpAddr>> {
    if !targets.iter().any(Target::binds_loopback_source) {
        return vec![None];
    }
    let count = clients.div_ceil(per_address.max(1)).max(1);
    (0..count)
        .map(|i| {
            let last = 1 + (usize::from(offset) + i) % SOURCE_ADDRESSES;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last as u8)))
        })
        .collect()
}

/// The source address of connection `n` to `target`: the next of `spread` for an IPv4 loopback
/// target, none (the kernel's choice) for any other, which a 127.0.0.x source cannot reach.
pub fn source_for(target: &Target, spread: &[Option<IpAddr>], n: usize) -> Option<IpAddr> {
    if !target.binds_loopback_source() || spread.is_empty() {
        return None;
    }
    spread[n % spread.len()]
}

/// The symbols every target lists, in the first one's order. Clients on different URLs must
/// get the same streams for the per-URL numbers to compare, so targets that list different
/// symbols are an error rather than a skewed run. Each distinct address is asked once.
pub async fn common_symbols(targets: &[Target]) -> Result<Vec<String>, String> {
    let first = targets.first().ok_or("--url names no server")?;
    let symbols = symbols_of(first).await?;
    let mut sorted = symbols.clone();
    sorted.sort_unstable();
    let mut asked = vec![first.addr];
    for target in targets.iter().skip(1) {
        if asked.contains(&target.addr) {
            continue;
        }
        asked.push(target.addr);
        let mut other = symbols_of(target).await?;
        other.sort_unstable();
        if other != sorted {
            return Err(format!(
                "{} lists other symbols than {} ({} against {}); every --url must serve the \
                 same feed",
                target.url,
                first.url,
                other.len(),
                sorted.len()
            ));
        }
    }
    Ok(symbols)
}

async fn symbols_of(target: &Target) -> Result<Vec<String>, String> {
    symbols(target)
        .await
        .map_err(|e| format!("{}: {e}", target.url))
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
    match http_get_from(addr, None, path).await? {
        (200, body, _) => Ok(body),
        (status, _, _) => Err(format!("GET {path}: status {status}")),
    }
}

/// GET `path` from `addr` (from `source` when given, so REST weight is counted per loopback
/// address as the clients' connections are), bounded to 10 s: the status, the body and the
/// response's size in bytes.
pub async fn http_get_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
) -> Result<(u16, String, usize), String> {
    let fetch = async {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(source) = source {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| format!("bind {source}: {e}"))?;
        }
        let mut stream = socket
            .connect(addr)
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
        let status = response
            .code
            .ok_or_else(|| format!("GET {path}: no status"))?;
        Ok((
            status,
            String::from_utf8_lossy(&raw[head..]).into_owned(),
            raw.len(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| format!("GET {path}: timed out"))?
}

/// Why a REST depth snapshot could not be had.
#[derive(Debug)]
pub enum RestError {
    /// 429 or 418: the server's REST weight limit (start it with a higher
    /// `--rest-weight-limit`, or 0).
    Limited,
    /// Anything else (refused, timed out, malformed): the caller tries again.
    Other,
}

/// `/api/v3/depth?symbol=..&limit=..` from `addr`, from `source` when given, and the bytes of
/// the response (head included: what the server sent for it).
pub async fn depth(
    addr: SocketAddr,
    source: Option<IpAddr>,
    symbol: &str,
    limit: usize,
) -> Result<(crate::book::RestSnapshot, usize), RestError> {
    let path = format!(
        "/api/v3/depth?symbol={}&limit={limit}",
        symbol.to_uppercase()
    );
    match http_get_from(addr, source, &path).await {
        Ok((200, body, size)) => serde_json::from_str(&body)
            .map(|snapshot| (snapshot, size))
            .map_err(|_| RestError::Other),
        Ok((429 | 418, _, _)) => Err(RestError::Limited),
        Ok(_) | Err(_) => Err(RestError::Other),
    }
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
        let target = parse_list("ws://127.0.0.1:9443", false).unwrap();
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
    fn url_lists_hold_every_entry_to_the_same_rule() {
        let two = parse_list("ws://127.0.0.1:9501,ws://127.0.0.1:9502", false).unwrap();
        let urls: Vec<&str> = two.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["ws://127.0.0.1:9501", "ws://127.0.0.1:9502"]);
        assert_eq!(two[1].addr.port(), 9502);
        // Spaces around entries are fine; a path stays in the name but not in the base.
        let spaced = parse_list(" ws://127.0.0.1:1/ws , ws://[::1]:2", false).unwrap();
        assert_eq!(spaced[0].url, "ws://127.0.0.1:1/ws");
        assert_eq!(spaced[0].base, "ws://127.0.0.1:1");
        // Duplicates are allowed: that URL takes two shares.
        let twice = parse_list("ws://127.0.0.1:1,ws://127.0.0.1:1", false).unwrap();
        assert_eq!(twice.len(), 2);
        // An empty entry is refused, not skipped, and named.
        for bad in [
            "ws://127.0.0.1:1,,ws://127.0.0.1:2",
            "ws://127.0.0.1:1,",
            ",ws://127.0.0.1:1",
            "",
            " , ",
        ] {
            let error = parse_list(bad, false).unwrap_err();
            assert!(error.contains("is empty"), "{bad}: {error}");
        }
        let error = parse_list("ws://127.0.0.1:1,,ws://127.0.0.1:2", false).unwrap_err();
        assert!(error.contains("entry 2 is empty"), "{error}");
        // One remote entry spoils the list unless --allow-remote.
        let error = parse_list("ws://127.0.0.1:1,ws://10.0.0.1:2", false).unwrap_err();
        assert!(
            error.starts_with("ws://10.0.0.1:2: 10.0.0.1 is not a loopback"),
            "{error}"
        );
        assert_eq!(
            parse_list("ws://127.0.0.1:1,ws://10.0.0.1:2", true)
                .unwrap()
                .len(),
            2
        );
        assert!(parse_list("ws://127.0.0.1:1,http://127.0.0.1:2", false).is_err());
    }

    #[test]
    fn clients_take_the_urls_round_robin_and_sources_only_where_they_reach() {
        assert_eq!(
            (0..5).map(|i| url_index(i, 2)).collect::<Vec<_>>(),
            [0, 1, 0, 1, 0]
        );
        assert_eq!(url_index(7, 1), 0);
        // A child of --processes from client 21 on continues the rotation.
        assert_eq!(url_index(21, 2), 1);
        let mixed = parse_list("ws://127.0.0.1:1,ws://[::1]:2,ws://10.0.0.1:3", true).unwrap();
        let spread = sources(&mixed, 200, 100, 0);
        assert_eq!(spread.len(), 2);
        assert_eq!(source_for(&mixed[0], &spread, 3), spread[1]);
        assert_eq!(source_for(&mixed[1], &spread, 3), None);
        assert_eq!(source_for(&mixed[2], &spread, 3), None);
        assert_eq!(sources(&mixed[1..], 200, 100, 0), [None]);
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
        let target = parse_list("ws://127.0.0.1:9443", false).unwrap();
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
