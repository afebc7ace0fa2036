//! The REST endpoints Binance clients call: ping, time, exchangeInfo, depth, trades,
//! aggTrades, klines, avgPrice and the tickers, plus `/metrics` for Prometheus and the
//! `/dashboard` page.
//!
//! Everything derived (the depth snapshot, trades, klines, tickers) is read on the engine thread
//! between two steps ([`Command::Snapshot`], [`Command::Read`]), so `/api/v3/depth`'s
//! `lastUpdateId` is exactly the `u` of the last published diff and a REST answer never holds a
//! trade the streams have not sent.
//!
//! [`api`] answers one request from its path and parsed query alone, so another front end (the
//! WebSocket API) can call the same handlers; [`handle`] adds what plain HTTP needs: the method
//! check, request weight per IP (`X-MBX-USED-WEIGHT-1M`, 429 past the limit) and metrics.

use crate::derive::stats::kline::KlineInterval;
use crate::derive::stats::rolling::{
    price_change_e8, push_percent_change, weighted_average_e8, TickerStats,
};
use crate::derive::Streams;
use crate::engine::Command;
use crate::front::context::Context;
use crate::front::http::{Head, Response};
use crate::market::feed::SymbolSpec;
use crate::protocol::decimal::format_e8;
use crate::protocol::json::{
    push_e8_str, push_escaped_str, push_i64, push_signed_e8_str, push_u64,
};
use crate::protocol::stream::SymbolId;
use std::net::IpAddr;
use tokio::sync::oneshot;

/// Largest `limit` for `/api/v3/depth`; larger values are truncated to it, as Binance does.
pub const MAX_DEPTH_LIMIT: usize = 5000;
const DEFAULT_DEPTH_LIMIT: usize = 100;
/// `limit` of trades, aggTrades and klines: 500 unless given, at most 1000.
const DEFAULT_LIMIT: usize = 500;
const MAX_LIMIT: usize = 1000;
/// Symbols one `symbols=[..]` may list (Binance's bound for the rolling-window ticker).
const MAX_SYMBOLS: usize = 100;

fn now_ms() -> u64 {
    crate::clock::wall_us() / 1000
}

/// A request's query parameters, percent-decoded, in order.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: &str) -> Params {
        Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers one REST request: the method check, its weight charged to `peer`'s minute, the
/// answer with `X-MBX-USED-WEIGHT-1M`, and the metrics.
pub async fn handle(head: &Head, peer: IpAddr, ctx: &Context) -> Response {
    let (label, response) = if head.method != "GET" && head.method != "HEAD" {
        (
            "other",
            Response::error(405, -1000, "Only GET is supported."),
        )
    } else {
        let params = Params::parse(&head.query);
        let charge = ctx.weights.charge(peer, weight_of(&head.path, &params));
        if charge.admitted {
            let (label, mut response) = api(&head.path, &params, ctx).await;
            response.extra_headers = format!(
                "{}X-MBX-USED-WEIGHT-1M: {}\r\n",
                response.extra_headers, charge.used
            )
            .into();
            (label, response)
        } else {
            let msg = format!(
                "Too much request weight used; current limit is {} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
                charge.limit
            );
            let retry_after_s = charge
                .retry_after_ms
                .saturating_sub(now_ms())
                .div_ceil(1000)
                .max(1);
            let mut response = Response::error(429, -1003, &msg);
            response.extra_headers = format!(
                "X-MBX-USED-WEIGHT-1M: {}\r\nRetry-After: {retry_after_s}\r\n",
                charge.used
            )
            .into();
            (path_label(&head.path), response)
        }
    };
    crate::metrics::http_request(label, response.status);
    if let Some(code) = response.error_code {
        crate::metrics::rest_error(code);
    }
    response
}

/// The fixed label of a path for `bookcast_http_requests_total` (anything else is "other").
fn path_label(path: &str) -> &'static str {
    const PATHS: &[&str] = &[
        "/api/v3/ping",
        "/api/v3/time",
        "/api/v3/exchangeInfo",
        "/api/v3/depth",
        "/api/v3/trades",
        "/api/v3/aggTrades",
        "/api/v3/klines",
        "/api/v3/avgPrice",
        "/api/v3/ticker/24hr",
        "/api/v3/ticker/price",
        "/api/v3/ticker/bookTicker",
        "/api/v3/ticker",
        "/metrics",
    ];
    PATHS
        .iter()
        .find(|&&p| p == path)
        .copied()
        .unwrap_or("other")
}

/// Binance's request weight of a request, from its path and parameters (bookcast's own
/// `/metrics` and `/dashboard` weigh nothing).
pub fn weight_of(path: &str, params: &Params) -> u32 {
    let symbols = params.get("symbols").map(|list| list.split(',').count());
    let one = params.get("symbol").is_some();
    match path {
        "/api/v3/exchangeInfo" => 20,
        "/api/v3/depth" => match params.get("limit").and_then(|l| l.parse::<u64>().ok()) {
            None | Some(0..=100) => 5,
            Some(101..=500) => 25,
            Some(501..=1000) => 50,
            Some(_) => 250,
        },
        "/api/v3/trades" => 25,
        "/api/v3/aggTrades" => 4,
        "/api/v3/klines" | "/api/v3/avgPrice" => 2,
        "/api/v3/ticker/24hr" => match (one, symbols) {
            (true, _) => 2,
            (false, Some(0..=20)) => 2,
            (false, Some(21..=100)) => 40,
            _ => 80,
        },
        "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker" if one => 2,
        "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker" => 4,
        "/api/v3/ticker" => {
            let count = if one { 1 } else { symbols.unwrap_or(1) };
            u32::try_from(count.saturating_mul(4))
                .unwrap_or(u32::MAX)
                .min(200)
        }
        "/metrics" => 0,
        p if p.starts_with("/dashboard") => 0,
        _ => 1,
    }
}

/// [`weight_of`] for a request head: what the WebSocket API ([`super::ws_api`]) charges.
pub(crate) fn weight(head: &Head) -> u32 {
    weight_of(&head.path, &Params::parse(&head.query))
}

/// The REST dispatch itself, uncounted and uncharged: the metric label and the response. The
/// WebSocket API ([`super::ws_api`]) answers through it too, so a method means exactly what its
/// endpoint does.
pub(crate) async fn route(head: &Head, ctx: &Context) -> (&'static str, Response) {
    if head.method != "GET" && head.method != "HEAD" {
        return (
            "other",
            Response::error(405, -1000, "Only GET is supported."),
        );
    }
    api(&head.path, &Params::parse(&head.query), ctx).await
}

/// Answers one market-data request from its path and parameters; returns the metric label of
/// the path with the response. Weight and the HTTP method are the caller's concern.
pub async fn api(path: &str, params: &Params, ctx: &Context) -> (&'static str, Response) {
    let response = match path {
        "/api/v3/ping" => Response::json(200, "{}"),
        "/api/v3/time" => Response::json(200, format!("{{\"serverTime\":{}}}", now_ms())),
        "/api/v3/exchangeInfo" => exchange_info(params, ctx),
        "/api/v3/depth" => depth(params, ctx).await,
        "/api/v3/trades" => trades(params, ctx).await,
        "/api/v3/aggTrades" => agg_trades(params, ctx).await,
        "/api/v3/klines" => klines(params, ctx).await,
        "/api/v3/avgPrice" => avg_price(params, ctx).await,
        "/api/v3/ticker/24hr" => ticker(params, ctx, Ticker::Day).await,
        "/api/v3/ticker/price" => ticker(params, ctx, Ticker::Price).await,
        "/api/v3/ticker/bookTicker" => ticker(params, ctx, Ticker::Book).await,
        "/api/v3/ticker" => ticker(params, ctx, Ticker::Rolling).await,
        "/metrics" => {
            let body = ctx.prometheus.render();
            let mut response = Response::json(200, body);
            response.content_type = "text/plain; version=0.0.4";
            response
        }
        path => {
            return crate::front::dashboard::route(path)
                .unwrap_or_else(|| ("other", Response::error(404, -1000, "Unknown path.")))
        }
    };
    (path_label(path), response)
}

/// Runs `read` on the engine thread between two steps and returns what it rendered.
async fn read<T: Send + 'static>(
    ctx: &Context,
    read: impl FnOnce(&Streams) -> T + Send + 'static,
) -> Result<T, Response> {
    let (reply, wait) = oneshot::channel();
    let command = Command::Read(Box::new(move |streams: &Streams| {
        let _ = reply.send(read(streams));
    }));
    if ctx.engine.try_send(command).is_err() {
        return Err(Response::error(503, -1003, "Server busy; try again."));
    }
    wait.await
        .map_err(|_| Response::error(503, -1003, "Server shutting down."))
}

fn invalid_symbol() -> Response {
    Response::error(400, -1121, "Invalid symbol.")
}

/// Binance checks a symbol's shape before looking it up: anything outside `^[A-Z0-9-_.]{1,20}$`
/// (lower case included) is -1100 ([`illegal_symbol`]), and only a well-formed unknown symbol
/// is -1121. Clients tell a typo from a delisting by that difference.
fn well_formed_symbol(symbol: &str) -> bool {
    (1..=20).contains(&symbol.len())
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Binance's -1100 for a malformed `symbol` or `symbols` parameter, with its pattern.
fn illegal_symbol(param: &str) -> Response {
    let pattern = if param == "symbols" {
        r#"^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$"#
    } else {
        "^[A-Z0-9-_.]{1,20}$"
    };
    let msg =
        format!("Illegal characters found in parameter '{param}'; legal range is '{pattern}'.");
    Response::error(400, -1100, &msg)
}

fn mandatory(param: &str) -> Response {
    Response::error(
        400,
        -1102,
        &format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
    )
}

fn illegal(param: &str, range: &str) -> Response {
    Response::error(
        400,
        -1100,
        &format!("Illegal characters found in parameter '{param}'; legal range is '{range}'."),
    )
}

fn symbol_id(ctx: &Context, symbol: &str) -> Option<SymbolId> {
    ctx.feed
        .index_of(symbol)
        .and_then(|i| SymbolId::try_from(i).ok())
}

/// The mandatory `symbol` parameter, checked as Binance does.
fn one_symbol(params: &Params, ctx: &Context) -> Result<SymbolId, Response> {
    let Some(symbol) = params.get("symbol").filter(|s| !s.is_empty()) else {
        return Err(mandatory("symbol"));
    };
    if !well_formed_symbol(symbol) {
        return Err(illegal_symbol("symbol"));
    }
    symbol_id(ctx, symbol).ok_or_else(invalid_symbol)
}

/// `symbols=["BTCUSDT","ETHUSDT"]`, as Binance takes it: a JSON-like list of quoted symbols.
fn symbol_list(list: &str, ctx: &Context) -> Result<Vec<SymbolId>, Response> {
    let inner = list
        .trim()
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .ok_or_else(|| illegal_symbol("symbols"))?;
    let mut ids = Vec::new();
    for name in inner.split(',') {
        let name = name.trim();
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or(name);
        if !well_formed_symbol(name) {
            return Err(illegal_symbol("symbols"));
        }
        ids.push(symbol_id(ctx, name).ok_or_else(invalid_symbol)?);
    }
    if ids.len() > MAX_SYMBOLS {
        return Err(Response::error(
            400,
            -1101,
            &format!("Too many values sent for parameter 'symbols', max is {MAX_SYMBOLS}."),
        ));
    }
    Ok(ids)
}

/// `symbol`, `symbols` or neither (every symbol); both at once is -1128.
fn some_symbols(params: &Params, ctx: &Context) -> Result<(bool, Vec<SymbolId>), Response> {
    match (params.get("symbol"), params.get("symbols")) {
        (Some(_), Some(_)) => Err(Response::error(
            400,
            -1128,
            "Combination of optional parameters invalid.",
        )),
        (Some(_), None) => Ok((true, vec![one_symbol(params, ctx)?])),
        (None, Some(list)) => Ok((false, symbol_list(list, ctx)?)),
        (None, None) => Ok((
            false,
            (0..ctx.feed.symbols.len())
                .filter_map(|i| SymbolId::try_from(i).ok())
                .collect(),
        )),
    }
}

/// `limit` as Binance validates it: `^[0-9]{1,20}$` (twenty digits can be past u64, and are then
/// just large), at least 1, and truncated to `max`.
fn limit(params: &Params, default: usize, max: usize) -> Result<usize, Response> {
    let Some(text) = params.get("limit") else {
        return Ok(default);
    };
    if !(1..=20).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(illegal("limit", "^[0-9]{1,20}$"));
    }
    match text.parse::<u128>().unwrap_or(u128::MAX) {
        0 => Err(Response::error(
            400,
            -1100,
            &format!("Illegal value for parameter 'limit'; legal range is '1..{max}'."),
        )),
        n => Ok(usize::try_from(n).map_or(max, |n| n.min(max))),
    }
}

/// An optional unsigned number parameter (`fromId`, `startTime`, `endTime`).
fn number(params: &Params, name: &str) -> Result<Option<u64>, Response> {
    match params.get(name) {
        None => Ok(None),
        Some(text) => {
            if !(1..=20).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(illegal(name, "^[0-9]{1,20}$"));
            }
            Ok(Some(text.parse::<u64>().unwrap_or(u64::MAX)))
        }
    }
}

/// `startTime` and `endTime` in µs; a start after the end is -1023.
fn time_range(params: &Params) -> Result<(Option<u64>, Option<u64>), Response> {
    let start = number(params, "startTime")?.map(|ms| ms.saturating_mul(1000));
    let end = number(params, "endTime")?.map(|ms| ms.saturating_mul(1000).saturating_add(999));
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(Response::error(
                400,
                -1023,
                "Start time is greater than end time.",
            ));
        }
    }
    Ok((start, end))
}

/// `timeZone`: hours (`8`, `-1`) or hours and minutes (`05:45`, `+08:00`), from -12:00 to
/// +14:00 inclusive; returns the offset east of UTC in µs.
fn time_zone(text: &str) -> Option<i64> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let digits = |s: &str, max_len: usize| {
        (1..=max_len).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(hours, 2) || !digits(minutes, 2) {
        return None;
    }
    let (hours, minutes) = (hours.parse::<i64>().ok()?, minutes.parse::<i64>().ok()?);
    if minutes >= 60 {
        return None;
    }
    let minutes = hours * 60 + minutes;
    let minutes = if negative { -minutes } else { minutes };
    if !(-12 * 60..=14 * 60).contains(&minutes) {
        return None;
    }
    Some(minutes * 60_000_000)
}

/// `windowSize`: `1m`..`59m`, `1h`..`23h`, `1d`..`7d`; in µs.
fn window_size(text: &str) -> Option<u64> {
    let unit = text.len().checked_sub(1)?;
    let (count, unit) = text.split_at(unit);
    if count.is_empty() || count.len() > 2 || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let count: u64 = count.parse().ok()?;
    let (max, micros) = match unit {
        "m" => (59, 60_000_000),
        "h" => (23, 3_600_000_000),
        "d" => (7, 86_400_000_000),
        _ => return None,
    };
    (1..=max).contains(&count).then_some(count * micros)
}

async fn depth(params: &Params, ctx: &Context) -> Response {
    let symbol = match one_symbol(params, ctx) {
        Ok(symbol) => symbol,
        Err(response) => return response,
    };
    let limit = match limit(params, DEFAULT_DEPTH_LIMIT, MAX_DEPTH_LIMIT) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let (reply, wait) = oneshot::channel();
    if ctx
        .engine
        .try_send(Command::Snapshot {
            symbol,
            limit,
            reply,
        })
        .is_err()
    {
        return Response::error(503, -1003, "Server busy; try again.");
    }
    match wait.await {
        Ok(body) => Response::json(200, body.to_vec()),
        Err(_) => Response::error(503, -1003, "Server shutting down."),
    }
}

/// Collapses a handler's `Result` into its response.
fn answer(result: Result<Vec<u8>, Response>) -> Response {
    match result {
        Ok(body) => Response::json(200, body),
        Err(response) => response,
    }
}

async fn trades(params: &Params, ctx: &Context) -> Response {
    answer(
        async {
            let symbol = one_symbol(params, ctx)?;
            let limit = limit(params, DEFAULT_LIMIT, MAX_LIMIT)?;
            read(ctx, move |s| s.symbol(symbol).recent_trades_json(limit)).await
        }
        .await,
    )
}

async fn agg_trades(params: &Params, ctx: &Context) -> Response {
    answer(
        async {
            let symbol = one_symbol(params, ctx)?;
            let from_id = number(params, "fromId")?;
            let (start, end) = time_range(params)?;
            let limit = limit(params, DEFAULT_LIMIT, MAX_LIMIT)?;
            read(ctx, move |s| {
                s.symbol(symbol).agg_trades_json(from_id, start, end, limit)
            })
            .await
        }
        .await,
    )
}

async fn klines(params: &Params, ctx: &Context) -> Response {
    answer(
        async {
            let symbol = one_symbol(params, ctx)?;
            let interval = match params.get("interval").filter(|i| !i.is_empty()) {
                None => return Err(mandatory("interval")),
                Some(text) => KlineInterval::parse(text)
                    .ok_or_else(|| Response::error(400, -1120, "Invalid interval."))?,
            };
            let (start, end) = time_range(params)?;
            let offset = match params.get("timeZone") {
                None => 0,
                Some(text) => {
                    time_zone(text).ok_or_else(|| illegal("timeZone", "[-12:00 to +14:00]"))?
                }
            };
            let limit = limit(params, DEFAULT_LIMIT, MAX_LIMIT)?;
            read(ctx, move |s| {
                s.symbol(symbol)
                    .klines_json(interval, offset, start, end, limit)
            })
            .await
        }
        .await,
    )
}

async fn avg_price(params: &Params, ctx: &Context) -> Response {
    answer(
        async {
            let symbol = one_symbol(params, ctx)?;
            let now_us = crate::clock::wall_us();
            read(ctx, move |s| {
                let symbol = s.symbol(symbol);
                let stats = symbol.avg_price_stats(now_us);
                let mut out = b"{\"mins\":5,\"price\":".to_vec();
                push_e8_str(&mut out, weighted_average_e8(&stats));
                out.extend_from_slice(b",\"closeTime\":");
                push_u64(&mut out, symbol.last_trade_us() / 1000);
                out.push(b'}');
                out
            })
            .await
        }
        .await,
    )
}

/// The ticker endpoints, which share their symbol selection.
#[derive(Clone, Copy)]
enum Ticker {
    /// `/api/v3/ticker/24hr`
    Day,
    /// `/api/v3/ticker/price`
    Price,
    /// `/api/v3/ticker/bookTicker`
    Book,
    /// `/api/v3/ticker`, the rolling window
    Rolling,
}

async fn ticker(params: &Params, ctx: &Context, kind: Ticker) -> Response {
    answer(
        async {
            let (single, symbols) = some_symbols(params, ctx)?;
            if matches!(kind, Ticker::Rolling)
                && params.get("symbol").is_none()
                && params.get("symbols").is_none()
            {
                return Err(mandatory("symbol"));
            }
            let mini = match (kind, params.get("type")) {
                (Ticker::Day | Ticker::Rolling, Some("MINI")) => true,
                (Ticker::Day | Ticker::Rolling, Some("FULL") | None) => false,
                (Ticker::Day | Ticker::Rolling, Some(_)) => {
                    return Err(illegal("type", "FULL, MINI"))
                }
                _ => false,
            };
            let window_us = match (kind, params.get("windowSize")) {
                (Ticker::Rolling, Some(text)) => window_size(text).ok_or_else(|| {
                    Response::error(
                        400,
                        -1100,
                        "Invalid windowSize; use 1m..59m, 1h..23h or 1d..7d.",
                    )
                })?,
                _ => 86_400_000_000,
            };
            let now_us = crate::clock::wall_us();
            read(ctx, move |s| {
                let mut out = Vec::with_capacity(64 + symbols.len() * 400);
                if !single {
                    out.push(b'[');
                }
                for (n, &id) in symbols.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    let symbol = s.symbol(id);
                    let name = symbol.spec().symbol.as_str();
                    match kind {
                        Ticker::Price => {
                            let stats = symbol.stats_over(now_us, 0);
                            write_head(&mut out, name);
                            out.extend_from_slice(b",\"price\":");
                            push_e8_str(&mut out, stats.last_e8);
                            out.push(b'}');
                        }
                        Ticker::Book => {
                            let ((bid, bid_qty), (ask, ask_qty)) = symbol.best();
                            write_head(&mut out, name);
                            for (field, value) in [
                                ("bidPrice", bid),
                                ("bidQty", bid_qty),
                                ("askPrice", ask),
                                ("askQty", ask_qty),
                            ] {
                                write_e8_field(&mut out, field, value);
                            }
                            out.push(b'}');
                        }
                        Ticker::Day | Ticker::Rolling => {
                            let stats = symbol.stats_over(now_us, window_us);
                            let day = matches!(kind, Ticker::Day);
                            let quotes = day.then(|| symbol.best());
                            write_ticker(&mut out, name, &stats, mini, quotes);
                        }
                    }
                }
                if !single {
                    out.push(b']');
                }
                out
            })
            .await
        }
        .await,
    )
}

fn write_head(out: &mut Vec<u8>, symbol: &str) {
    out.extend_from_slice(b"{\"symbol\":");
    push_escaped_str(out, symbol);
}

fn write_e8_field(out: &mut Vec<u8>, field: &str, value: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    push_e8_str(out, value);
}

/// One ticker object of `/api/v3/ticker/24hr` (`quotes` given: with `prevClosePrice`,
/// `lastQty` and the book's best quotes) or `/api/v3/ticker`, FULL or MINI, in Binance's field
/// order.
fn write_ticker(
    out: &mut Vec<u8>,
    symbol: &str,
    s: &TickerStats,
    mini: bool,
    quotes: Option<((u64, u64), (u64, u64))>,
) {
    write_head(out, symbol);
    if !mini {
        out.extend_from_slice(b",\"priceChange\":");
        push_signed_e8_str(out, price_change_e8(s.open_e8, s.last_e8));
        out.extend_from_slice(b",\"priceChangePercent\":");
        push_percent_change(out, s.open_e8, s.last_e8);
        write_e8_field(out, "weightedAvgPrice", weighted_average_e8(s));
        if let Some(((bid, bid_qty), (ask, ask_qty))) = quotes {
            write_e8_field(out, "prevClosePrice", s.prev_close_e8);
            write_e8_field(out, "lastPrice", s.last_e8);
            write_e8_field(out, "lastQty", s.last_qty_e8);
            write_e8_field(out, "bidPrice", bid);
            write_e8_field(out, "bidQty", bid_qty);
            write_e8_field(out, "askPrice", ask);
            write_e8_field(out, "askQty", ask_qty);
        }
    }
    write_e8_field(out, "openPrice", s.open_e8);
    write_e8_field(out, "highPrice", s.high_e8);
    write_e8_field(out, "lowPrice", s.low_e8);
    if mini || quotes.is_none() {
        write_e8_field(out, "lastPrice", s.last_e8);
    }
    write_e8_field(out, "volume", s.volume_e8);
    write_e8_field(out, "quoteVolume", s.quote_volume_e8);
    out.extend_from_slice(b",\"openTime\":");
    push_u64(out, s.open_time_us / 1000);
    out.extend_from_slice(b",\"closeTime\":");
    push_u64(out, s.close_time_us / 1000);
    out.extend_from_slice(b",\"firstId\":");
    push_i64(out, s.first_id);
    out.extend_from_slice(b",\"lastId\":");
    push_i64(out, s.last_id);
    out.extend_from_slice(b",\"count\":");
    push_u64(out, s.count);
    out.push(b'}');
}

fn exchange_info(params: &Params, ctx: &Context) -> Response {
    let mut wanted: Vec<&SymbolSpec> = ctx.feed.symbols.iter().collect();
    if let Some(symbol) = params.get("symbol") {
        if symbol.is_empty() {
            return mandatory("symbol");
        }
        if !well_formed_symbol(symbol) {
            return illegal_symbol("symbol");
        }
        match ctx.feed.index_of(symbol) {
            Some(i) => wanted = vec![&ctx.feed.symbols[i]],
            None => return invalid_symbol(),
        }
    } else if let Some(list) = params.get("symbols") {
        // `symbols=["BTCUSDT","ETHUSDT"]`, as Binance takes it.
        let names: Vec<String> = list
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect();
        wanted.clear();
        for name in names {
            if !well_formed_symbol(&name) {
                return illegal_symbol("symbols");
            }
            match ctx.feed.index_of(&name) {
                Some(i) => wanted.push(&ctx.feed.symbols[i]),
                None => return invalid_symbol(),
            }
        }
    }
    let symbols: Vec<String> = wanted.iter().map(|s| symbol_info(s)).collect();
    let body = format!(
        "{{\"timezone\":\"UTC\",\"serverTime\":{},\"rateLimits\":[{{\"rateLimitType\":\"REQUEST_WEIGHT\",\"interval\":\"MINUTE\",\"intervalNum\":1,\"limit\":6000}}],\"exchangeFilters\":[],\"symbols\":[{}]}}",
        now_ms(),
        symbols.join(",")
    );
    Response::json(200, body)
}

fn symbol_info(spec: &SymbolSpec) -> String {
    let tick = format_e8(spec.tick_e8);
    let lot = format_e8(spec.lot_e8);
    let max_price = format_e8(spec.tick_e8.saturating_mul(100_000_000).min(u64::MAX / 2));
    let max_qty = format_e8(spec.lot_e8.saturating_mul(9_000_000_000).min(u64::MAX / 2));
    format!(
        concat!(
            "{{\"symbol\":\"{symbol}\",\"status\":\"TRADING\",\"baseAsset\":\"{base}\",\"baseAssetPrecision\":8,",
            "\"quoteAsset\":\"{quote}\",\"quotePrecision\":8,\"quoteAssetPrecision\":8,",
            "\"baseCommissionPrecision\":8,\"quoteCommissionPrecision\":8,",
            "\"orderTypes\":[\"LIMIT\",\"LIMIT_MAKER\",\"MARKET\",\"STOP_LOSS_LIMIT\",\"TAKE_PROFIT_LIMIT\"],",
            "\"icebergAllowed\":true,\"ocoAllowed\":true,\"otoAllowed\":true,\"quoteOrderQtyMarketAllowed\":true,",
            "\"allowTrailingStop\":true,\"cancelReplaceAllowed\":true,\"isSpotTradingAllowed\":true,",
            "\"isMarginTradingAllowed\":false,",
            "\"filters\":[{{\"filterType\":\"PRICE_FILTER\",\"minPrice\":\"{tick}\",\"maxPrice\":\"{max_price}\",\"tickSize\":\"{tick}\"}},",
            "{{\"filterType\":\"LOT_SIZE\",\"minQty\":\"{lot}\",\"maxQty\":\"{max_qty}\",\"stepSize\":\"{lot}\"}}],",
            "\"permissions\":[],\"permissionSets\":[[\"SPOT\"]],",
            "\"defaultSelfTradePreventionMode\":\"EXPIRE_MAKER\",",
            "\"allowedSelfTradePreventionModes\":[\"NONE\",\"EXPIRE_TAKER\",\"EXPIRE_MAKER\",\"EXPIRE_BOTH\"]}}"
        ),
        symbol = spec.symbol,
        base = spec.base_asset,
        quote = spec.quote_asset,
        tick = tick,
        lot = lot,
        max_price = max_price,
        max_qty = max_qty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_and_window_sizes_as_binance_reads_them() {
        const H: i64 = 3_600_000_000;
        for (text, offset) in [
            ("0", Some(0)),
            ("8", Some(8 * H)),
            ("+08:00", Some(8 * H)),
            ("-1:00", Some(-H)),
            ("05:45", Some(5 * H + 45 * 60_000_000)),
            ("14", Some(14 * H)),
            ("-12:00", Some(-12 * H)),
            ("14:01", None),
            ("-13", None),
            ("5:60", None),
            ("", None),
            ("+", None),
            ("8h", None),
            ("123", None),
        ] {
            assert_eq!(time_zone(text), offset, "{text:?}");
        }
        assert_eq!(window_size("1m"), Some(60_000_000));
        assert_eq!(window_size("23h"), Some(23 * 3_600_000_000));
        assert_eq!(window_size("7d"), Some(7 * 86_400_000_000));
        for bad in ["", "m", "0m", "60m", "24h", "8d", "1w", "1M", "+1d", "001d"] {
            assert_eq!(window_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn weights_follow_binance() {
        let w = |path: &str, query: &str| weight_of(path, &Params::parse(query));
        assert_eq!(w("/api/v3/depth", "symbol=X&limit=5000"), 250);
        assert_eq!(w("/api/v3/depth", "symbol=X"), 5);
        assert_eq!(w("/api/v3/trades", "symbol=X"), 25);
        assert_eq!(w("/api/v3/ticker/24hr", "symbol=X"), 2);
        assert_eq!(w("/api/v3/ticker/24hr", ""), 80);
        assert_eq!(w("/api/v3/ticker/price", ""), 4);
        assert_eq!(w("/api/v3/ticker", "symbols=[\"A\",\"B\"]"), 8);
        assert_eq!(w("/metrics", ""), 0);
    }
}
