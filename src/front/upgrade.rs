//! Validating a WebSocket upgrade request: the RFC 6455 handshake headers, and which streams,
//! payload shape and time unit the path asks for.

use super::context::Context;
use super::http::{Head, Response};
use crate::protocol::json::TimeUnit;
use crate::protocol::stream::{self, Topic};

/// What a WebSocket path asks for.
pub struct Upgrade {
    /// The `/echo` conformance route (only with `--test-echo-route`).
    pub echo: bool,
    /// The WebSocket API (`/ws-api/v3`): requests answered through the REST dispatch
    /// ([`super::ws_api`]) instead of control messages, and no streams.
    pub api: bool,
    pub combined: bool,
    pub unit: TimeUnit,
    /// `snapshot=true` (bookcast's addition): diff streams start with a `depthSnapshot`.
    pub snapshot: bool,
    pub topics: Vec<Topic>,
    /// `resume=<stream>:<id>,..` (bookcast's addition): streams of `topics` and the last id the
    /// client holds of each.
    pub resume: Vec<(Topic, u64)>,
}

/// Percent-decodes stream names from a URL, keeping `+` a plus: in `btcusdt@kline_1d@+08:00`
/// it is part of the name (Binance reads it so), not a form-encoded space.
fn decode_name(raw: &str) -> String {
    let plus_kept = raw.replace('+', "%2B");
    form_urlencoded::parse(format!("x={plus_kept}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .next()
        .unwrap_or_default()
}

/// Binance's WebSocket API path (SPEC.md), the one version bookcast serves.
pub const WS_API_PATH: &str = "/ws-api/v3";

/// Parses `/ws-api/v3`, `/ws`, `/ws/<s1>/<s2>`, `/stream?streams=<s1>/<s2>` and `timeUnit`.
///
/// Like Binance, names in the URL that are not streams are ignored rather than refused (ccxt
/// connects to `/ws/<n>` with a number and subscribes afterwards); the count limit holds.
pub fn parse_upgrade(head: &Head, ctx: &Context) -> Result<Upgrade, Response> {
    if head.path == "/echo" && ctx.config.test_echo_route {
        return Ok(Upgrade {
            echo: true,
            api: false,
            combined: false,
            unit: TimeUnit::Millisecond,
            snapshot: false,
            topics: Vec::new(),
            resume: Vec::new(),
        });
    }
    if head.path == WS_API_PATH {
        return Ok(Upgrade {
            echo: false,
            api: true,
            combined: false,
            unit: TimeUnit::Millisecond,
            snapshot: false,
            topics: Vec::new(),
            resume: Vec::new(),
        });
    }
    let (combined, names): (bool, Vec<String>) =
        if head.path == "/stream" || head.path == "/stream/" {
            let streams = head
                .query
                .split('&')
                .find_map(|pair| pair.strip_prefix("streams="))
                .map(decode_name)
                .unwrap_or_default();
            (
                true,
                streams
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        } else if head.path == "/ws" || head.path.starts_with("/ws/") {
            let rest = head.path.strip_prefix("/ws").unwrap_or_default();
            let decoded: Vec<String> = rest
                .split('/')
                .filter(|s| !s.is_empty())
                .map(decode_name)
                .collect();
            (false, decoded)
        } else {
            return Err(Response::error(
                404,
                -1000,
                "Unknown WebSocket path; use /ws, /ws/<s>, /stream?streams=<a>/<b> or /ws-api/v3.",
            ));
        };
    let unit = parse_time_unit(head)?;
    let snapshot = match head.param("snapshot").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(Response::error(
                400,
                -1100,
                "Invalid snapshot; use true or false.",
            ))
        }
    };
    if names.len() > ctx.config.max_streams {
        let msg = format!(
            "Too many streams: at most {} per connection.",
            ctx.config.max_streams
        );
        return Err(Response::error(400, -1101, &msg));
    }
    let mut topics: Vec<Topic> = Vec::with_capacity(names.len());
    for name in &names {
        if let Ok(topic) = stream::parse(name, &*ctx.feed) {
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
    }
    let resume = match head.param("resume") {
        None => Vec::new(),
        Some(list) => parse_resume(&list, &topics, ctx)
            .map_err(|msg| Response::error(400, -1100, &format!("Invalid resume: {msg}")))?,
    };
    Ok(Upgrade {
        echo: false,
        api: false,
        combined,
        unit,
        snapshot,
        topics,
        resume,
    })
}

/// `timeUnit=MILLISECOND|MICROSECOND` (default milliseconds).
pub fn parse_time_unit(head: &Head) -> Result<TimeUnit, Response> {
    match head.param("timeUnit") {
        None => Ok(TimeUnit::Millisecond),
        Some(value) => TimeUnit::parse(&value).ok_or_else(|| {
            Response::error(
                400,
                -1100,
                "Invalid timeUnit; use MILLISECOND or MICROSECOND.",
            )
        }),
    }
}

/// `streams=<s1>/<s2>` of the plain-HTTP transports (`/sse`, `/poll`): every name must be a
/// stream (these are bookcast's own endpoints, with no client that sends anything else), at
/// most `--max-streams` of them, each once. Returns the topics and the names as written.
pub fn parse_named_streams(
    head: &Head,
    ctx: &Context,
) -> Result<(Vec<Topic>, Vec<String>), Response> {
    let refuse = |msg: &str| {
        crate::metrics::rejected(crate::metrics::Rejection::BadStreamPath);
        Response::error(400, -1100, msg)
    };
    let raw = head
        .query
        .split('&')
        .find_map(|pair| pair.strip_prefix("streams="))
        .map(decode_name)
        .unwrap_or_default();
    let names: Vec<String> = raw
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(refuse("Name at least one stream: streams=<s1>/<s2>."));
    }
    if names.len() > ctx.config.max_streams {
        return Err(refuse(&format!(
            "Too many streams: at most {} per connection.",
            ctx.config.max_streams
        )));
    }
    let mut topics: Vec<Topic> = Vec::with_capacity(names.len());
    for name in &names {
        let topic = stream::parse(name, &*ctx.feed)
            .map_err(|_| refuse(&format!("Invalid stream name: {name}.")))?;
        if topics.contains(&topic) {
            return Err(refuse(&format!("{name} is named twice.")));
        }
        topics.push(topic);
    }
    Ok((topics, names))
}

/// Parses `resume=<stream>:<id>,..`: each stream must be a diff, `@trade` or `@aggTrade` stream
/// named in the same URL (as SPEC.md defines it), at most once, with a decimal id.
fn parse_resume(list: &str, topics: &[Topic], ctx: &Context) -> Result<Vec<(Topic, u64)>, String> {
    let mut resume: Vec<(Topic, u64)> = Vec::new();
    for entry in list.split(',').filter(|e| !e.is_empty()) {
        let (name, id) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry}: expected <stream>:<id>."))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("{entry}: the id is not a number."))?;
        let topic = stream::parse(name, &*ctx.feed)
            .ok()
            .filter(|topic| topics.contains(topic))
            .ok_or_else(|| format!("{name} is not a stream of this URL."))?;
        if !topic.is_resumable() {
            return Err(format!(
                "{name} cannot be resumed; only diff depth, trade and aggTrade streams can."
            ));
        }
        if resume.iter().any(|(t, _)| *t == topic) {
            return Err(format!("{name} is named twice."));
        }
        resume.push((topic, id));
    }
    Ok(resume)
}

/// Checks the RFC 6455 handshake headers; `Err` is the response to refuse with.
pub(crate) fn check_handshake(head: &Head) -> Result<String, Response> {
    if head.method != "GET" {
        return Err(Response::error(
            405,
            -1000,
            "WebSocket upgrades must use GET.",
        ));
    }
    if !head.upgrade_websocket || !head.connection_upgrade {
        let mut response = Response::error(
            426,
            -1000,
            "This path serves WebSocket only: send an Upgrade: websocket request.",
        );
        response.extra_headers = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n".into();
        return Err(response);
    }
    if head.ws_version.as_deref() != Some("13") {
        let mut response = Response::error(
            426,
            -1000,
            "Unsupported Sec-WebSocket-Version; this server speaks 13.",
        );
        response.extra_headers = "Sec-WebSocket-Version: 13\r\n".into();
        return Err(response);
    }
    let key = head.ws_key.clone().unwrap_or_default();
    let valid_key = key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid_key {
        return Err(Response::error(
            400,
            -1000,
            "Missing or invalid Sec-WebSocket-Key.",
        ));
    }
    Ok(key)
}

pub(crate) fn is_websocket_path(path: &str) -> bool {
    path == "/ws"
        || path.starts_with("/ws/")
        || path == "/stream"
        || path == "/stream/"
        || path == "/echo"
        || path == WS_API_PATH
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::http::parse_head;

    #[test]
    fn parses_a_websocket_upgrade_head() {
        let raw = b"GET /stream?streams=btcusdt@depth/ethusdt@trade&timeUnit=MICROSECOND HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
        let Ok(Some((head, consumed))) = parse_head(raw) else {
            panic!("a complete head parses");
        };
        assert_eq!(&raw[consumed..], b"rest");
        assert!(head.upgrade_websocket && head.connection_upgrade);
        assert_eq!(head.path, "/stream");
        assert_eq!(
            head.param("streams").as_deref(),
            Some("btcusdt@depth/ethusdt@trade")
        );
        assert_eq!(check_handshake(&head).unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
    }
}
