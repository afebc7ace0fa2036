//! The WebSocket API subset at `/ws-api/v3` (SPEC.md): market-data requests over a socket,
//! answered as Binance's WebSocket API answers them.
//!
//! It is a thin adapter over the REST dispatch (`rest::route`), not a second
//! implementation: a request `{"id":..,"method":"depth","params":{"symbol":"BTCUSDT","limit":5}}`
//! becomes `GET /api/v3/depth?symbol=BTCUSDT&limit=5`, and the REST answer becomes
//! `{"id":..,"status":200,"result":<body>,"rateLimits":[..]}`, or, for a REST error body
//! `{"code":..,"msg":..}`, `{"id":..,"status":4xx,"error":{"code":..,"msg":..},"rateLimits":[..]}`.
//! A method means exactly what its endpoint means (parameters, validation, errors, weight), and
//! a REST endpoint becomes a method by adding one row to [`METHODS`]. A method whose endpoint is
//! not served yet gets what REST answers for an unknown path, turned into the API's
//! unsupported-operation error.
//!
//! The session ([`super::session`]) runs one request at a time per connection and reads the
//! next only once the answer is queued: answers keep the requests' order, and a client that
//! sends faster than it is answered is slowed by TCP, not buffered here.

use super::context::Context;
use super::http::Head;
use super::rest;
use super::weight::Charge;
use crate::protocol::json::{self, push_escaped_str};
use simd_json::prelude::*;
use simd_json::BorrowedValue;
use std::net::IpAddr;
use std::time::Duration;

/// Each method and the REST endpoint it is answered by, as SPEC.md lists them.
pub const METHODS: &[(&str, &str)] = &[
    ("ping", "/api/v3/ping"),
    ("time", "/api/v3/time"),
    ("exchangeInfo", "/api/v3/exchangeInfo"),
    ("depth", "/api/v3/depth"),
    ("trades.recent", "/api/v3/trades"),
    ("klines", "/api/v3/klines"),
    ("avgPrice", "/api/v3/avgPrice"),
    ("ticker.24hr", "/api/v3/ticker/24hr"),
    ("ticker.price", "/api/v3/ticker/price"),
    ("ticker.book", "/api/v3/ticker/bookTicker"),
];

/// Metric labels besides the method names: a method not in [`METHODS`], and a request whose
/// method could not be read (bad JSON, no `method`).
pub const UNKNOWN_METHOD: &str = "unknown";
pub const INVALID_REQUEST: &str = "invalid";

/// Longest string `id` Binance accepts (a UUID is 36), as for control messages.
const MAX_ID_LEN: usize = 36;
/// Deepest nesting a valid request has (request object, params object, a `symbols` array);
/// deeper input is refused before parsing, so hostile nesting costs nothing.
const MAX_DEPTH: usize = 3;
/// Binance's WebSocket API gives up on a request after 10 s with -1007.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Weight of a request that names no method this server serves: not free, so a flood of
/// garbage is limited like any other traffic.
const INVALID_WEIGHT: u32 = 1;

/// One answered request, for the session to queue and count.
pub struct Answer {
    /// The response's JSON text.
    pub json: Vec<u8>,
    /// The method as a metrics label: a [`METHODS`] name, [`UNKNOWN_METHOD`] or
    /// [`INVALID_REQUEST`].
    pub method: &'static str,
    /// The error code sent, if any.
    pub error: Option<i32>,
}

/// A request refused before dispatch.
struct Refusal {
    status: u16,
    code: i32,
    msg: String,
}

impl Refusal {
    fn bad_json(msg: impl Into<String>) -> Self {
        Refusal {
            status: 400,
            code: -1135,
            msg: msg.into(),
        }
    }
}

/// What parsing a request produced: the id to echo (JSON text), the method label, and the
/// REST request or the reason it cannot be made.
struct Parsed {
    id: Vec<u8>,
    method: &'static str,
    request: Result<Head, Refusal>,
}

/// Answers one text message of a `/ws-api/v3` connection from `peer`. Never fails: whatever
/// the input, the answer is a well-formed response (with `id` null when none could be read).
pub async fn answer(mut text: Vec<u8>, peer: IpAddr, ctx: &Context) -> Answer {
    let Parsed {
        id,
        method,
        request,
    } = parse(&mut text);
    let weight = request.as_ref().map_or(INVALID_WEIGHT, rest::weight);
    let charge = ctx.weights.charge(peer, weight);
    if !charge.admitted {
        let msg = format!(
            "Too much request weight used; current limit is {} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
            charge.limit
        );
        let data = format!(
            "{{\"serverTime\":{},\"retryAfter\":{}}}",
            crate::clock::wall_us() / 1000,
            charge.retry_after_ms
        );
        let refusal = Refusal {
            status: 429,
            code: -1003,
            msg,
        };
        return error(&id, method, &refusal, Some(&data), &charge);
    }
    let head = match request {
        Ok(head) => head,
        Err(refusal) => return error(&id, method, &refusal, None, &charge),
    };
    let routed = tokio::time::timeout(REQUEST_TIMEOUT, rest::route(&head, ctx)).await;
    let (label, response) = match routed {
        Ok(routed) => routed,
        Err(_) => {
            let refusal = Refusal {
                status: 503,
                code: -1007,
                msg: "Timeout waiting for response from backend server. Send status unknown; execution status unknown.".into(),
            };
            return error(&id, method, &refusal, None, &charge);
        }
    };
    if response.status == 200 {
        let mut json = Vec::with_capacity(response.body.len() + 160);
        json.extend_from_slice(b"{\"id\":");
        json.extend_from_slice(&id);
        json.extend_from_slice(b",\"status\":200,\"result\":");
        json.extend_from_slice(&response.body);
        push_rate_limits(&mut json, &charge);
        json.push(b'}');
        return Answer {
            json,
            method,
            error: None,
        };
    }
    if response.status == 404 && label == "other" {
        // The method is in the table, its REST endpoint is not served (yet): to the client
        // this is an operation the server does not support, as an unknown method is.
        return error(&id, method, &unsupported(method), None, &charge);
    }
    // A REST error body is already Binance's `{"code":..,"msg":..}`: it becomes `error` as is.
    let code = error_code(&response.body);
    let mut json = Vec::with_capacity(response.body.len() + 160);
    json.extend_from_slice(b"{\"id\":");
    json.extend_from_slice(&id);
    json.extend_from_slice(format!(",\"status\":{},\"error\":", response.status).as_bytes());
    json.extend_from_slice(&response.body);
    push_rate_limits(&mut json, &charge);
    json.push(b'}');
    Answer {
        json,
        method,
        error: Some(code.unwrap_or(-1000)),
    }
}

fn unsupported(method: &str) -> Refusal {
    Refusal {
        status: 400,
        code: -1020,
        msg: format!("Unsupported method '{method}': this operation is not supported."),
    }
}

/// The `code` of a REST error body `{"code":N,"msg":..}` ([`super::http::Response::error`]).
fn error_code(body: &[u8]) -> Option<i32> {
    let rest = body.strip_prefix(b"{\"code\":")?;
    let end = rest.iter().position(|&b| b == b',')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn error(
    id: &[u8],
    method: &'static str,
    refusal: &Refusal,
    data: Option<&str>,
    charge: &Charge,
) -> Answer {
    let mut json = Vec::with_capacity(refusal.msg.len() + 200);
    json.extend_from_slice(b"{\"id\":");
    json.extend_from_slice(id);
    json.extend_from_slice(
        format!(
            ",\"status\":{},\"error\":{{\"code\":{},\"msg\":",
            refusal.status, refusal.code
        )
        .as_bytes(),
    );
    push_escaped_str(&mut json, &refusal.msg);
    if let Some(data) = data {
        json.extend_from_slice(b",\"data\":");
        json.extend_from_slice(data.as_bytes());
    }
    json.push(b'}');
    push_rate_limits(&mut json, charge);
    json.push(b'}');
    Answer {
        json,
        method,
        error: Some(refusal.code),
    }
}

/// `,"rateLimits":[..]`: the address's request weight this minute, as every Binance answer
/// carries it (errors included), so clients can pace themselves.
fn push_rate_limits(json: &mut Vec<u8>, charge: &Charge) {
    json.extend_from_slice(
        format!(
            ",\"rateLimits\":[{{\"rateLimitType\":\"REQUEST_WEIGHT\",\"interval\":\"MINUTE\",\"intervalNum\":1,\"limit\":{},\"count\":{}}}]",
            charge.limit, charge.used
        )
        .as_bytes(),
    );
}

/// Reads a request. `text` is scratch: simd-json parses in place.
fn parse(text: &mut [u8]) -> Parsed {
    let invalid = |refusal: Refusal| Parsed {
        id: b"null".to_vec(),
        method: INVALID_REQUEST,
        request: Err(refusal),
    };
    if json::nesting_depth(text) > MAX_DEPTH {
        return invalid(Refusal::bad_json("Invalid JSON Request: nested too deep."));
    }
    let value = match simd_json::to_borrowed_value(text) {
        Ok(value) => value,
        Err(_) => return invalid(Refusal::bad_json("Invalid JSON Request.")),
    };
    let Some(object) = value.as_object() else {
        return invalid(Refusal::bad_json(
            "Invalid JSON Request: expected an object.",
        ));
    };
    let mut id = Vec::new();
    match object.get("id") {
        None => id.extend_from_slice(b"null"),
        Some(v) if v.is_null() => id.extend_from_slice(b"null"),
        Some(v) => match (v.as_i64(), v.as_u64(), v.as_str()) {
            (Some(n), _, _) => id.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            (None, Some(n), _) => id.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            (None, None, Some(s)) if s.len() <= MAX_ID_LEN => push_escaped_str(&mut id, s),
            _ => {
                return invalid(Refusal::bad_json(
                    "Invalid 'id' in JSON request; expected an integer, a string of at most 36 characters, or null.",
                ))
            }
        },
    }
    let refuse = |id: Vec<u8>, method, refusal| Parsed {
        id,
        method,
        request: Err(refusal),
    };
    let Some(name) = object.get("method").and_then(|m| m.as_str()) else {
        let refusal = Refusal {
            status: 400,
            code: -1102,
            msg: "Mandatory parameter 'method' was not sent, was empty/null, or malformed.".into(),
        };
        return refuse(id, INVALID_REQUEST, refusal);
    };
    let Some(&(method, path)) = METHODS.iter().find(|(m, _)| *m == name) else {
        return refuse(id, UNKNOWN_METHOD, unsupported(name));
    };
    let query = match object.get("params") {
        None => Ok(String::new()),
        Some(params) if params.is_null() => Ok(String::new()),
        Some(params) => query(params),
    };
    let request = query.map(|query| Head {
        method: "GET".into(),
        path: path.into(),
        query,
        upgrade_websocket: false,
        connection_upgrade: false,
        connection_close: false,
        ws_key: None,
        ws_version: None,
        content_length: 0,
        http10: false,
        origin: None,
        host: None,
        authorization: None,
        last_event_id: None,
    });
    Parsed {
        id,
        method,
        request,
    }
}

/// `params` as the query string of the REST request: strings as they are, numbers and booleans
/// as their JSON text, arrays (`symbols`) as the JSON text REST takes (`["A","B"]`); a `null`
/// value is not sent.
fn query(params: &BorrowedValue<'_>) -> Result<String, Refusal> {
    let Some(params) = params.as_object() else {
        return Err(Refusal::bad_json(
            "Invalid 'params' in JSON request; expected an object.",
        ));
    };
    let invalid =
        |name: &str| Refusal::bad_json(format!("JSON sent for parameter '{name}' is not valid"));
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params.iter() {
        if value.is_null() {
            continue;
        }
        let text = if let Some(s) = value.as_str() {
            s.to_string()
        } else if let Some(items) = value.as_array() {
            let mut list = Vec::new();
            list.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    list.push(b',');
                }
                match item.as_str() {
                    Some(s) => push_escaped_str(&mut list, s),
                    None if item.is_number() => list.extend_from_slice(item.encode().as_bytes()),
                    None => return Err(invalid(name)),
                }
            }
            list.push(b']');
            String::from_utf8_lossy(&list).into_owned()
        } else if value.is_number() || value.is_bool() {
            value.encode()
        } else {
            return Err(invalid(name));
        };
        query.append_pair(name, &text);
    }
    Ok(query.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Parsed {
        parse(&mut text.as_bytes().to_vec())
    }

    #[test]
    fn params_become_the_query_of_the_methods_endpoint() {
        let p = parsed(
            r#"{"id":"a","method":"exchangeInfo","params":{"symbols":["BTCUSDT","ETHUSDT"],"x":1.5,"y":true,"z":null}}"#,
        );
        assert_eq!(p.id, br#""a""#);
        assert_eq!(p.method, "exchangeInfo");
        let Ok(head) = p.request else {
            panic!("a valid request");
        };
        assert_eq!(head.path, "/api/v3/exchangeInfo");
        assert_eq!(
            head.param("symbols").as_deref(),
            Some(r#"["BTCUSDT","ETHUSDT"]"#)
        );
        assert_eq!(head.param("x").as_deref(), Some("1.5"));
        assert_eq!(head.param("y").as_deref(), Some("true"));
        assert_eq!(head.param("z"), None);
    }

    #[test]
    fn malformed_requests_are_refused_with_binance_codes() {
        let code = |text: &str| parsed(text).request.err().map(|r| r.code);
        assert_eq!(code("{"), Some(-1135));
        assert_eq!(code("[]"), Some(-1135));
        assert_eq!(
            code(r#"{"id":1,"method":"ping","params":[1]}"#),
            Some(-1135)
        );
        assert_eq!(
            code(r#"{"id":1,"method":"ping","params":{"a":{"b":1}}}"#),
            Some(-1135)
        );
        assert_eq!(code(r#"{"id":1.5,"method":"ping"}"#), Some(-1135));
        assert_eq!(code(r#"{"id":1}"#), Some(-1102));
        assert_eq!(code(r#"{"id":1,"method":"order.place"}"#), Some(-1020));
        assert_eq!(code(r#"{"id":-7,"method":"ping"}"#), None);
        assert_eq!(parsed(r#"{"id":-7,"method":"ping"}"#).id, b"-7");
        assert_eq!(error_code(br#"{"code":-1121,"msg":"x"}"#), Some(-1121));
    }
}
