//! The feed file: which symbols the server simulates and how each one trades.
//!
//! A feed is user input, so everything is validated up front and every refusal names the symbol
//! and the field. Prices and sizes are decimal strings (never TOML floats) and are converted once
//! to integer e8 units and ticks, the only forms the rest of the server uses.

use crate::protocol::stream::{SymbolId, SymbolTable};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use crate::market::book::MAX_LEVEL_LOTS;
use crate::protocol::decimal::{format_e8, parse_e8};

/// The feed used when none is given on the command line; compiled in so the binary is self-contained.
pub const DEFAULT_FEED_TOML: &str = include_str!("../../feeds/default.toml");

/// Fewest and most price levels a book may keep per side.
pub const DEPTH_RANGE: std::ops::RangeInclusive<usize> = 10..=5000;

/// Slowest and fastest engine update rate per symbol, in updates per second.
pub const RATE_RANGE: std::ops::RangeInclusive<u32> = 10..=100;

/// The start price must be at least this many times `depth` ticks, so a full bid side (whose
/// levels thin out to gaps of a few ticks far from the touch) fits above zero with room for the
/// price to drift down.
pub const START_TICKS_PER_DEPTH: u64 = 4;

/// Multiple of the start price that must still fit a `u64` of e8 units. The simulator keeps the
/// price near its start (a soft band of about 10%), so this is a generous overflow guard.
const PRICE_HEADROOM: u64 = 8;

/// A validated feed: the symbols to simulate, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    pub symbols: Vec<SymbolSpec>,
}

/// One validated symbol. Prices are in ticks and sizes in lots from here on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolSpec {
    /// Upper-case exchange symbol, `base_asset` followed by `quote_asset`.
    pub symbol: String,
    pub base_asset: String,
    pub quote_asset: String,
    /// Price increment in e8 units (> 0).
    pub tick_e8: u64,
    /// Quantity increment in e8 units (> 0).
    pub lot_e8: u64,
    /// Initial price in ticks (> 0).
    pub start_price_ticks: u64,
    /// Price levels the book keeps per side.
    pub depth: usize,
    /// Engine updates per second.
    pub rate_hz: u32,
    /// Seed of this symbol's deterministic market.
    pub seed: u64,
}

impl SymbolSpec {
    /// The lower-case symbol, as it appears in stream names (`btcusdt@depth`).
    pub fn lower(&self) -> String {
        self.symbol.to_ascii_lowercase()
    }
}

/// Why a feed was refused; the message names the file (when loaded from one), symbol and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedError(String);

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FeedError {}

impl Feed {
    /// Parses and validates a feed; the first problem found is returned.
    pub fn parse(toml_text: &str) -> Result<Feed, FeedError> {
        parse_feed(toml_text).map_err(|msg| FeedError(format!("feed: {msg}")))
    }

    /// Reads and parses a feed file; errors include the path.
    pub fn load(path: &Path) -> Result<Feed, FeedError> {
        let prefixed = |msg: String| FeedError(format!("feed {}: {msg}", path.display()));
        let text =
            std::fs::read_to_string(path).map_err(|e| prefixed(format!("cannot read: {e}")))?;
        parse_feed(&text).map_err(prefixed)
    }

    /// The compiled-in [`DEFAULT_FEED_TOML`].
    pub fn embedded_default() -> Feed {
        Feed::parse(DEFAULT_FEED_TOML).expect("the embedded default feed is tested to be valid")
    }

    /// Position of `symbol_upper` in [`Feed::symbols`]. A linear scan: feeds are small and this
    /// is only used when a stream is subscribed, not per update.
    pub fn index_of(&self, symbol_upper: &str) -> Option<usize> {
        self.symbols.iter().position(|s| s.symbol == symbol_upper)
    }
}

impl SymbolTable for Feed {
    fn index_of(&self, symbol_upper: &str) -> Option<usize> {
        Feed::index_of(self, symbol_upper)
    }

    fn lower_name(&self, symbol: SymbolId) -> String {
        self.symbols
            .get(usize::from(symbol))
            .map_or_else(String::new, SymbolSpec::lower)
    }
}

/// The file as written. Everything is optional so that a missing field is reported with the
/// symbol it belongs to, rather than as a bare TOML position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    #[serde(default)]
    symbol: Vec<RawSymbol>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSymbol {
    symbol: Option<String>,
    base_asset: Option<String>,
    quote_asset: Option<String>,
    tick_size: Option<String>,
    lot_size: Option<String>,
    start_price: Option<String>,
    depth: Option<i64>,
    rate: Option<i64>,
    seed: Option<i64>,
}

fn parse_feed(text: &str) -> Result<Feed, String> {
    let raw: RawFeed = toml::from_str(text).map_err(|e| format!("invalid TOML: {e}"))?;
    if raw.symbol.is_empty() {
        return Err("no [[symbol]] entries: a feed needs at least one symbol".to_owned());
    }
    let mut seen = HashSet::with_capacity(raw.symbol.len());
    let mut symbols = Vec::with_capacity(raw.symbol.len());
    for (index, entry) in raw.symbol.into_iter().enumerate() {
        let spec = validate_symbol(index, entry)?;
        if !seen.insert(spec.symbol.clone()) {
            return Err(format!("symbol {:?}: listed more than once", spec.symbol));
        }
        symbols.push(spec);
    }
    Ok(Feed { symbols })
}

fn validate_symbol(index: usize, raw: RawSymbol) -> Result<SymbolSpec, String> {
    let symbol = raw
        .symbol
        .ok_or_else(|| format!("symbol #{}: symbol: missing", index + 1))?;
    let fail = |field: &str, why: String| format!("symbol {symbol:?}: {field}: {why}");
    let required =
        |field: &str, value: Option<String>| value.ok_or_else(|| fail(field, "missing".into()));
    let required_int =
        |field: &str, value: Option<i64>| value.ok_or_else(|| fail(field, "missing".into()));

    if !(2..=20).contains(&symbol.len()) || !is_upper_alnum(&symbol) {
        return Err(fail(
            "symbol",
            "must be 2 to 20 characters of A-Z and 0-9".into(),
        ));
    }
    let base_asset = required("base_asset", raw.base_asset)?;
    let quote_asset = required("quote_asset", raw.quote_asset)?;
    for (field, asset) in [("base_asset", &base_asset), ("quote_asset", &quote_asset)] {
        if asset.is_empty() || !is_upper_alnum(asset) {
            return Err(fail(
                field,
                format!("{asset:?} must be non-empty A-Z and 0-9"),
            ));
        }
    }
    if symbol != format!("{base_asset}{quote_asset}") {
        return Err(fail(
            "symbol",
            format!("must be base_asset followed by quote_asset ({base_asset}{quote_asset})"),
        ));
    }

    let positive_decimal = |field: &str, value: Option<String>| -> Result<u64, String> {
        let text = required(field, value)?;
        let e8 = parse_e8(&text).map_err(|e| fail(field, e.to_string()))?;
        if e8 == 0 {
            return Err(fail(field, "must be greater than zero".into()));
        }
        Ok(e8)
    };
    let tick_e8 = positive_decimal("tick_size", raw.tick_size)?;
    let lot_e8 = positive_decimal("lot_size", raw.lot_size)?;
    let start_e8 = positive_decimal("start_price", raw.start_price)?;

    if lot_e8.checked_mul(MAX_LEVEL_LOTS).is_none() {
        return Err(fail(
            "lot_size",
            format!("too large: {MAX_LEVEL_LOTS} lots must fit in a quantity"),
        ));
    }
    if start_e8 % tick_e8 != 0 {
        return Err(fail(
            "start_price",
            format!(
                "{} is not a whole multiple of tick_size {}",
                format_e8(start_e8),
                format_e8(tick_e8)
            ),
        ));
    }
    if start_e8.checked_mul(PRICE_HEADROOM).is_none() {
        return Err(fail("start_price", "too large".into()));
    }
    let start_price_ticks = start_e8 / tick_e8;

    let depth = required_int("depth", raw.depth)?;
    let depth = usize::try_from(depth)
        .ok()
        .filter(|d| DEPTH_RANGE.contains(d))
        .ok_or_else(|| {
            let (lo, hi) = (DEPTH_RANGE.start(), DEPTH_RANGE.end());
            fail("depth", format!("{depth} is outside {lo}..={hi}"))
        })?;
    let min_ticks = START_TICKS_PER_DEPTH * depth as u64;
    if start_price_ticks < min_ticks {
        return Err(fail(
            "start_price",
            format!(
                "only {start_price_ticks} ticks above zero; depth {depth} needs at least \
                 {min_ticks} ({START_TICKS_PER_DEPTH} x depth)"
            ),
        ));
    }

    let rate = required_int("rate", raw.rate)?;
    let rate_hz = u32::try_from(rate)
        .ok()
        .filter(|r| RATE_RANGE.contains(r))
        .ok_or_else(|| {
            let (lo, hi) = (RATE_RANGE.start(), RATE_RANGE.end());
            fail(
                "rate",
                format!("{rate} is outside {lo}..={hi} updates per second"),
            )
        })?;

    let seed = required_int("seed", raw.seed)?;
    let seed = u64::try_from(seed).map_err(|_| fail("seed", format!("{seed} is negative")))?;

    Ok(SymbolSpec {
        symbol,
        base_asset,
        quote_asset,
        tick_e8,
        lot_e8,
        start_price_ticks,
        depth,
        rate_hz,
        seed,
    })
}

fn is_upper_alnum(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[symbol]]
symbol = "BTCUSDT"
base_asset = "BTC"
quote_asset = "USDT"
tick_size = "0.01"
lot_size = "0.00001"
start_price = "65000.00"
depth = 200
rate = 100
seed = 1
"#;

    /// `GOOD` with one `key = value` line replaced (or removed when `line` is empty).
    fn with(key: &str, line: &str) -> String {
        GOOD.lines()
            .map(|l| {
                if l.starts_with(&format!("{key} ")) {
                    line
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn error_of(text: &str) -> String {
        match Feed::parse(text) {
            Ok(feed) => panic!("expected an error, parsed {feed:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_a_symbol_into_ticks_and_lots() {
        let feed = Feed::parse(GOOD).unwrap();
        let btc = &feed.symbols[0];
        assert_eq!(btc.symbol, "BTCUSDT");
        assert_eq!(btc.lower(), "btcusdt");
        assert_eq!(
            (btc.base_asset.as_str(), btc.quote_asset.as_str()),
            ("BTC", "USDT")
        );
        assert_eq!(btc.tick_e8, 1_000_000);
        assert_eq!(btc.lot_e8, 1_000);
        assert_eq!(btc.start_price_ticks, 6_500_000);
        assert_eq!((btc.depth, btc.rate_hz, btc.seed), (200, 100, 1));
        assert_eq!(feed.index_of("BTCUSDT"), Some(0));
        assert_eq!(feed.index_of("btcusdt"), None);
    }

    #[test]
    fn default_feed_is_valid_and_realistic() {
        let feed = Feed::embedded_default();
        assert!(
            feed.symbols.len() >= 20,
            "only {} symbols",
            feed.symbols.len()
        );
        for name in ["BTCUSDT", "ETHUSDT", "ETHBTC", "BNBBTC"] {
            assert!(feed.index_of(name).is_some(), "{name} missing");
        }
        let total: u32 = feed.symbols.iter().map(|s| s.rate_hz).sum();
        assert!((800..=1200).contains(&total), "total rate {total}");
        let seeds: HashSet<u64> = feed.symbols.iter().map(|s| s.seed).collect();
        assert_eq!(seeds.len(), feed.symbols.len(), "seeds must be distinct");
    }

    #[test]
    fn small_feed_is_valid() {
        let feed = Feed::parse(include_str!("../../feeds/small.toml")).unwrap();
        let rates: Vec<_> = feed
            .symbols
            .iter()
            .map(|s| (s.symbol.as_str(), s.rate_hz))
            .collect();
        assert_eq!(rates, [("BTCUSDT", 100), ("ETHUSDT", 50), ("XRPUSDT", 20)]);
    }

    #[test]
    fn refuses_bad_fields_naming_symbol_and_field() {
        let cases = [
            (
                with("tick_size", r#"tick_size = "0.0x""#),
                r#"symbol "BTCUSDT": tick_size: invalid decimal "0.0x""#,
            ),
            (
                with("tick_size", r#"tick_size = "0""#),
                "tick_size: must be greater than zero",
            ),
            (
                with("tick_size", r#"tick_size = "0.000000001""#),
                "tick_size: invalid decimal",
            ),
            (
                with("lot_size", r#"lot_size = "-1""#),
                "lot_size: invalid decimal",
            ),
            (
                with("lot_size", r#"lot_size = "1000""#),
                "lot_size: too large",
            ),
            (
                with("start_price", r#"start_price = "65000.005""#),
                "start_price: 65000.00500000 is not a whole multiple of tick_size 0.01000000",
            ),
            (
                with("start_price", r#"start_price = "1.2.3""#),
                "start_price: invalid decimal",
            ),
            (
                with("tick_size", r#"tick_size = "0.03""#),
                "not a whole multiple of tick_size",
            ),
            (
                with("start_price", r#"start_price = "7.00""#),
                "start_price: only 700 ticks",
            ),
            (
                with("start_price", r#"start_price = "0""#),
                "start_price: must be greater than zero",
            ),
            (with("depth", "depth = 9"), "depth: 9 is outside 10..=5000"),
            (with("depth", "depth = 5001"), "depth: 5001 is outside"),
            (with("depth", "depth = -1"), "depth: -1 is outside"),
            (with("rate", "rate = 0"), "rate: 0 is outside 10..=100"),
            (with("rate", "rate = 101"), "rate: 101 is outside"),
            (with("seed", "seed = -5"), "seed: -5 is negative"),
            (
                with("symbol", r#"symbol = "btcusdt""#),
                r#"symbol "btcusdt": symbol: must be 2 to 20"#,
            ),
            (
                with("symbol", r#"symbol = "BTC-USDT""#),
                "symbol: must be 2 to 20",
            ),
            (
                with("symbol", r#"symbol = "ETHUSDT""#),
                "symbol: must be base_asset followed by quote_asset",
            ),
            (
                with("base_asset", r#"base_asset = "btc""#),
                "base_asset: \"btc\" must be",
            ),
            (
                with("quote_asset", ""),
                r#"symbol "BTCUSDT": quote_asset: missing"#,
            ),
            (with("rate", ""), r#"symbol "BTCUSDT": rate: missing"#),
            (with("symbol", ""), "symbol #1: symbol: missing"),
            (with("seed", "seed = 1\nspeed = 3"), "unknown field `speed`"),
            (with("depth", r#"depth = "200""#), "invalid TOML"),
            (with("tick_size", "tick_size = 0.01"), "invalid TOML"),
        ];
        for (text, expected) in cases {
            let message = error_of(&text);
            assert!(message.starts_with("feed: "), "{message}");
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn refuses_empty_and_duplicate_feeds() {
        assert!(error_of("").contains("at least one symbol"));
        assert!(error_of("title = 'x'").contains("unknown field `title`"));
        assert!(error_of("not toml [").contains("invalid TOML"));
        let twice = format!("{GOOD}\n{GOOD}");
        assert!(error_of(&twice).contains(r#"symbol "BTCUSDT": listed more than once"#));
    }

    #[test]
    fn load_names_the_path() {
        let missing = Path::new("/nonexistent/bookcast-feed.toml");
        let message = Feed::load(missing).unwrap_err().to_string();
        assert!(
            message.starts_with("feed /nonexistent/bookcast-feed.toml: cannot read"),
            "{message}"
        );

        let path = std::env::temp_dir().join(format!("bookcast-feed-{}.toml", std::process::id()));
        std::fs::write(&path, with("rate", "rate = 1")).unwrap();
        let message = Feed::load(&path).unwrap_err().to_string();
        std::fs::write(&path, GOOD).unwrap();
        let loaded = Feed::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(r#"symbol "BTCUSDT": rate: 1 is outside"#),
            "{message}"
        );
        assert_eq!(loaded.unwrap(), Feed::parse(GOOD).unwrap());
    }
}
