//! The REST endpoints Binance clients call before streaming: ping, time, exchangeInfo, depth,
//! plus `/metrics` for Prometheus and the `/dashboard` page.
//!
//! `/api/v3/depth` asks the engine thread for the snapshot, so it is rendered between two
//! engine steps and its `lastUpdateId` is exactly the `u` of the last published diff.

use crate::engine::Command;
use crate::front::context::Context;
use crate::front::http::{Head, Response};
use crate::market::feed::SymbolSpec;
use crate::protocol::decimal::format_e8;
use crate::protocol::stream::SymbolId;
use tokio::sync::oneshot;

/// Largest `limit` for `/api/v3/depth`; larger values are truncated to it, as Binance does.
pub const MAX_DEPTH_LIMIT: usize = 5000;
const DEFAULT_DEPTH_LIMIT: usize = 100;

fn now_ms() -> u64 {
    crate::clock::wall_us() / 1000
}

/// Answers one REST request and counts it.
pub async fn handle(head: &Head, ctx: &Context) -> Response {
    let (label, response) = route(head, ctx).await;
    crate::metrics::http_request(label, response.status);
    response
}

/// The REST dispatch itself, uncounted: the metric label and the response. The WebSocket API
/// ([`super::ws_api`]) answers through it too, so a method means exactly what its endpoint does.
pub(crate) async fn route(head: &Head, ctx: &Context) -> (&'static str, Response) {
    if head.method != "GET" && head.method != "HEAD" {
        return (
            "other",
            Response::error(405, -1000, "Only GET is supported."),
        );
    }
    match head.path.as_str() {
        "/api/v3/ping" => ("/api/v3/ping", Response::json(200, "{}")),
        "/api/v3/time" => (
            "/api/v3/time",
            Response::json(200, format!("{{\"serverTime\":{}}}", now_ms())),
        ),
        "/api/v3/exchangeInfo" => ("/api/v3/exchangeInfo", exchange_info(head, ctx)),
        "/api/v3/depth" => ("/api/v3/depth", depth(head, ctx).await),
        "/metrics" => {
            let body = ctx.prometheus.render();
            let mut response = Response::json(200, body);
            response.content_type = "text/plain; version=0.0.4";
            ("/metrics", response)
        }
        path => crate::front::dashboard::route(path)
            .unwrap_or_else(|| ("other", Response::error(404, -1000, "Unknown path."))),
    }
}

/// Binance's request weight of an endpoint (the same over REST and the WebSocket API), before
/// its parameters are validated: a request that fails validation still costs its weight.
pub(crate) fn weight(head: &Head) -> u32 {
    let symbols = || {
        head.param("symbols")
            .map(|list| list.split(',').filter(|s| !s.trim().is_empty()).count())
    };
    let one_symbol = head.param("symbol").is_some();
    match head.path.as_str() {
        "/api/v3/exchangeInfo" => 20,
        "/api/v3/depth" => {
            let limit = head
                .param("limit")
                .and_then(|text| depth_limit(&text).ok())
                .unwrap_or(DEFAULT_DEPTH_LIMIT);
            match limit {
                0..=100 => 5,
                101..=500 => 25,
                501..=1000 => 50,
                _ => 250,
            }
        }
        "/api/v3/trades" => 25,
        "/api/v3/aggTrades" => 4,
        "/api/v3/klines" | "/api/v3/avgPrice" => 2,
        "/api/v3/ticker/24hr" if one_symbol => 2,
        "/api/v3/ticker/24hr" => match symbols() {
            Some(0..=20) => 2,
            Some(21..=100) => 40,
            _ => 80,
        },
        "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker" if one_symbol => 2,
        "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker" => 4,
        "/api/v3/ticker" => {
            let count = if one_symbol {
                1
            } else {
                symbols().unwrap_or(1)
            };
            u32::try_from(count).map_or(200, |n| n.saturating_mul(4).min(200))
        }
        _ => 1,
    }
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

fn mandatory_symbol() -> Response {
    Response::error(
        400,
        -1102,
        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
    )
}

fn symbol_id(ctx: &Context, symbol: &str) -> Option<SymbolId> {
    ctx.feed
        .index_of(symbol)
        .and_then(|i| SymbolId::try_from(i).ok())
}

/// `limit` as Binance validates it: `^[0-9]{1,20}$` (twenty digits can be past u64, and are then
/// just large), at least 1, and truncated to [`MAX_DEPTH_LIMIT`].
fn depth_limit(text: &str) -> Result<usize, Response> {
    if !(1..=20).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Response::error(
            400,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
        ));
    }
    match text.parse::<u128>().unwrap_or(u128::MAX) {
        0 => Err(Response::error(
            400,
            -1100,
            "Illegal value for parameter 'limit'; legal range is '1..5000'.",
        )),
        n => Ok(usize::try_from(n).map_or(MAX_DEPTH_LIMIT, |n| n.min(MAX_DEPTH_LIMIT))),
    }
}

async fn depth(head: &Head, ctx: &Context) -> Response {
    let Some(symbol) = head.param("symbol").filter(|s| !s.is_empty()) else {
        return mandatory_symbol();
    };
    if !well_formed_symbol(&symbol) {
        return illegal_symbol("symbol");
    }
    let Some(symbol) = symbol_id(ctx, &symbol) else {
        return invalid_symbol();
    };
    let limit = match head.param("limit") {
        None => DEFAULT_DEPTH_LIMIT,
        Some(text) => match depth_limit(&text) {
            Ok(limit) => limit,
            Err(response) => return response,
        },
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

fn exchange_info(head: &Head, ctx: &Context) -> Response {
    let mut wanted: Vec<&SymbolSpec> = ctx.feed.symbols.iter().collect();
    if let Some(symbol) = head.param("symbol") {
        if symbol.is_empty() {
            return mandatory_symbol();
        }
        if !well_formed_symbol(&symbol) {
            return illegal_symbol("symbol");
        }
        match ctx.feed.index_of(&symbol) {
            Some(i) => wanted = vec![&ctx.feed.symbols[i]],
            None => return invalid_symbol(),
        }
    } else if let Some(list) = head.param("symbols") {
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
