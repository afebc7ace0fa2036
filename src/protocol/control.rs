//! Control messages: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY.
//!
//! Parsing is a pure function from the client's text and the connection's subscription state
//! to a [`Change`] for the hub plus the reply bytes, so it is tested without sockets and the
//! session only has to sequence the result through the engine. Replies and error texts follow
//! Binance's documented ones; error codes are SPEC.md's: 0 unknown property, 1 invalid value
//! type, 2 invalid request, 3 invalid JSON.

use crate::protocol::json::{self, push_escaped_str};
use crate::protocol::stream::{self, StreamNameError, SymbolTable, Topic, TopicList};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

/// A change a control message makes to a connection's subscriptions.
#[derive(Debug)]
pub enum Change {
    None,
    Subscribe(Vec<Topic>),
    Unsubscribe(Vec<Topic>),
    SetCombined(bool),
    /// `SET_PROPERTY ["snapshot", ..]`: diff streams subscribed from now on start with an
    /// in-band `depthSnapshot` (bookcast's addition, SPEC.md).
    SetSnapshot(bool),
}

/// Longest string `id` Binance accepts (a UUID is 36).
const MAX_ID_LEN: usize = 36;
/// Deepest JSON nesting a valid request can have (an object holding an array); deeper input is
/// refused before parsing so hostile nesting costs nothing.
const MAX_DEPTH: usize = 4;

/// The per-connection state control messages read and change.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// In subscription order, as LIST_SUBSCRIPTIONS reports them.
    pub topics: TopicList,
    pub combined: bool,
    /// `snapshot=true`: every diff stream subscribed starts with a `depthSnapshot`.
    pub snapshot: bool,
}

/// What one control message produced.
#[derive(Debug)]
pub struct Outcome {
    pub change: Change,
    pub reply: Vec<u8>,
    /// The error code sent, for metrics.
    pub error: Option<u8>,
    /// The method, as a fixed metrics label: one of the five, "unknown" or "invalid" (no method
    /// could be read).
    pub method: &'static str,
}

/// The request `id` to echo.
enum Id<'a> {
    Null,
    Number(u64),
    Text(&'a str),
}

fn push_id(out: &mut Vec<u8>, id: &Id<'_>) {
    match id {
        Id::Null => out.extend_from_slice(b"null"),
        Id::Number(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Id::Text(text) => push_escaped_str(out, text),
    }
}

fn error(code: u8, msg: &str, id: &Id<'_>) -> Outcome {
    let mut reply = Vec::with_capacity(64 + msg.len());
    reply.extend_from_slice(b"{\"error\":{\"code\":");
    reply.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    reply.extend_from_slice(b",\"msg\":");
    push_escaped_str(&mut reply, msg);
    reply.extend_from_slice(b"},\"id\":");
    push_id(&mut reply, id);
    reply.push(b'}');
    Outcome {
        change: Change::None,
        reply,
        error: Some(code),
        method: "invalid",
    }
}

fn result(change: Change, result_json: &[u8], id: &Id<'_>) -> Outcome {
    let mut reply = Vec::with_capacity(24 + result_json.len());
    reply.extend_from_slice(b"{\"result\":");
    reply.extend_from_slice(result_json);
    reply.extend_from_slice(b",\"id\":");
    push_id(&mut reply, id);
    reply.push(b'}');
    Outcome {
        change,
        reply,
        error: None,
        method: "invalid",
    }
}

/// Handles one text message. `text` is scratch: simd-json parses in place.
pub fn handle(
    text: &mut [u8],
    state: &mut Subscriptions,
    feed: &(impl SymbolTable + ?Sized),
    max_streams: usize,
) -> Outcome {
    let mut method = "invalid";
    let outcome = handle_request(text, state, feed, max_streams, &mut method);
    Outcome { method, ..outcome }
}

fn handle_request(
    text: &mut [u8],
    state: &mut Subscriptions,
    feed: &(impl SymbolTable + ?Sized),
    max_streams: usize,
    label: &mut &'static str,
) -> Outcome {
    if json::nesting_depth(text) > MAX_DEPTH {
        return error(3, "Invalid JSON: nesting too deep", &Id::Null);
    }
    let value = match simd_json::to_borrowed_value(text) {
        Ok(value) => value,
        Err(e) => return error(3, &format!("Invalid JSON: {e}"), &Id::Null),
    };
    let Some(object) = value.as_object() else {
        return error(2, "Invalid request: expected an object", &Id::Null);
    };
    let id = match object.get("id") {
        None => Id::Null,
        Some(v) if v.is_null() => Id::Null,
        Some(v) => match (v.as_u64(), v.as_str()) {
            (Some(n), _) => Id::Number(n),
            (None, Some(s)) if s.len() <= MAX_ID_LEN => Id::Text(s),
            _ => {
                return error(
                    2,
                    "Invalid request: request ID must be an unsigned integer",
                    &Id::Null,
                )
            }
        },
    };
    let Some(method) = object.get("method") else {
        return error(2, "Invalid request: missing field `method`", &id);
    };
    let Some(method) = method.as_str() else {
        return error(2, "Invalid request: method must be a string", &id);
    };
    *label = match method {
        "SUBSCRIBE" => "SUBSCRIBE",
        "UNSUBSCRIBE" => "UNSUBSCRIBE",
        "LIST_SUBSCRIPTIONS" => "LIST_SUBSCRIPTIONS",
        "SET_PROPERTY" => "SET_PROPERTY",
        "GET_PROPERTY" => "GET_PROPERTY",
        _ => "unknown",
    };
    let params = object.get("params");
    let params: &[BorrowedValue] = match params {
        None => &[],
        Some(v) if v.is_null() => &[],
        Some(v) => match v.as_array() {
            Some(array) => array,
            None => return error(2, "Invalid request: params must be an array", &id),
        },
    };
    match method {
        "SUBSCRIBE" | "UNSUBSCRIBE" => {
            if params.len() > max_streams {
                return error(2, "Invalid request: too many parameters", &id);
            }
            let mut topics = Vec::with_capacity(params.len());
            for param in params {
                let Some(name) = param.as_str() else {
                    return error(2, "Invalid request: stream name must be a string", &id);
                };
                match stream::parse(name, feed) {
                    Ok(topic) => topics.push(topic),
                    Err(why) => {
                        let why = match why {
                            StreamNameError::Malformed => "invalid stream name",
                            StreamNameError::UnknownSymbol => "unknown symbol in stream name",
                        };
                        return error(2, &format!("Invalid request: {why} {name:?}"), &id);
                    }
                }
            }
            if method == "SUBSCRIBE" {
                let mut new_topics: Vec<Topic> = Vec::with_capacity(topics.len());
                for topic in topics {
                    if !state.topics.contains(&topic) && !new_topics.contains(&topic) {
                        new_topics.push(topic);
                    }
                }
                if state.topics.len() + new_topics.len() > max_streams {
                    let msg = format!(
                        "Invalid request: too many streams: at most {max_streams} per connection"
                    );
                    return error(2, &msg, &id);
                }
                state.topics.extend_from_slice(&new_topics);
                result(Change::Subscribe(new_topics), b"null", &id)
            } else {
                state.topics.retain(|t| !topics.contains(t));
                result(Change::Unsubscribe(topics), b"null", &id)
            }
        }
        "LIST_SUBSCRIPTIONS" => {
            let mut list = Vec::with_capacity(2 + state.topics.len() * 24);
            json::push_array(&mut list, &state.topics, |list, topic| {
                push_escaped_str(list, &topic.name(feed))
            });
            result(Change::None, &list, &id)
        }
        "SET_PROPERTY" | "GET_PROPERTY" => {
            let setting = method == "SET_PROPERTY";
            let expected = if setting { 2 } else { 1 };
            if params.len() > expected {
                return error(2, "Invalid request: too many parameters", &id);
            }
            let Some(name) = params.first().and_then(|p| p.as_str()) else {
                return error(2, "Invalid request: property name must be a string", &id);
            };
            let current = match name {
                "combined" => state.combined,
                "snapshot" => state.snapshot,
                _ => return error(0, "Unknown property", &id),
            };
            if !setting {
                let value: &[u8] = if current { b"true" } else { b"false" };
                return result(Change::None, value, &id);
            }
            let Some(value) = params.get(1).and_then(|v| v.as_bool()) else {
                return error(1, "Invalid value type: expected Boolean", &id);
            };
            let change = if name == "combined" {
                state.combined = value;
                Change::SetCombined(value)
            } else {
                state.snapshot = value;
                Change::SetSnapshot(value)
            };
            result(change, b"null", &id)
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            let msg = format!(
                "Invalid request: unknown variant {shown:?}, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
            );
            error(2, &msg, &id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::feed::Feed;

    fn run(state: &mut Subscriptions, text: &str) -> (String, Option<u8>) {
        let feed = Feed::embedded_default();
        let mut bytes = text.as_bytes().to_vec();
        let outcome = handle(&mut bytes, state, &feed, 3);
        (String::from_utf8(outcome.reply).unwrap(), outcome.error)
    }

    #[test]
    fn binance_replies() {
        let mut state = Subscriptions::default();
        let sub = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@depth"],"id":1}"#;
        assert_eq!(
            run(&mut state, sub),
            (r#"{"result":null,"id":1}"#.into(), None)
        );
        let list = r#"{"method":"LIST_SUBSCRIPTIONS","id":"3f6b0c1e-0000-4000-8000-000000000000"}"#;
        assert_eq!(
            run(&mut state, list).0,
            r#"{"result":["btcusdt@trade","btcusdt@depth"],"id":"3f6b0c1e-0000-4000-8000-000000000000"}"#
        );
        let unsub = r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":2}"#;
        assert_eq!(run(&mut state, unsub).0, r#"{"result":null,"id":2}"#);
        assert_eq!(
            run(
                &mut state,
                r#"{"method":"GET_PROPERTY","params":["combined"],"id":6}"#
            )
            .0,
            r#"{"result":false,"id":6}"#
        );
        assert_eq!(
            run(
                &mut state,
                r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#
            )
            .0,
            r#"{"result":null,"id":5}"#
        );
        assert!(state.combined);
        assert_eq!(
            run(&mut state, r#"{"method":"LIST_SUBSCRIPTIONS","id":null}"#).0,
            r#"{"result":["btcusdt@trade"],"id":null}"#
        );
    }

    #[test]
    fn every_error_code() {
        let mut state = Subscriptions::default();
        let cases = [
            (r#"{"method":"GET_PROPERTY","params":["nope"],"id":1}"#, 0),
            (
                r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":1}"#,
                1,
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":1}"#,
                2,
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["nosuch@trade"],"id":1}"#,
                2,
            ),
            (r#"{"method":"SUBSCRIBE","params":[1],"id":1}"#, 2),
            (r#"{"method":"SUBSCRIB","id":1}"#, 2),
            (
                r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":-1}"#,
                2,
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":"0123456789012345678901234567890123456"}"#,
                2,
            ),
            (r#"{"params":[],"id":1}"#, 2),
            (
                r#"{"method":"SUBSCRIBE","params":["a","b","c","d"],"id":1}"#,
                2,
            ),
            (r#"[1,2]"#, 2),
            (r#"{"method":"SUBSCRIBE""#, 3),
            (r#"[[[[[[[[[[]]]]]]]]]]"#, 3),
        ];
        for (text, code) in cases {
            let (reply, error) = run(&mut state, text);
            assert_eq!(error, Some(code), "{text} -> {reply}");
            assert!(
                reply.starts_with(&format!("{{\"error\":{{\"code\":{code},")),
                "{reply}"
            );
        }
        assert!(
            state.topics.is_empty(),
            "no failed request subscribed anything"
        );
    }

    #[test]
    fn stream_limit_counts_distinct_streams() {
        let mut state = Subscriptions::default();
        let ok = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@trade","ethusdt@trade"],"id":1}"#;
        assert_eq!(run(&mut state, ok).1, None);
        assert_eq!(
            run(
                &mut state,
                r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","xrpusdt@trade"],"id":2}"#
            )
            .1,
            None
        );
        let over = r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":3}"#;
        let (reply, error) = run(&mut state, over);
        assert_eq!(error, Some(2), "{reply}");
        assert_eq!(state.topics.len(), 3);
    }
}
