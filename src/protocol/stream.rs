//! Stream names: parsing `btcusdt@depth@100ms` into a [`Topic`] and back.
//!
//! A topic is what clients subscribe to; its name is what they subscribe with and what combined
//! payloads carry in `"stream"`. Names round-trip exactly, so `depth` and `depth@1000ms` (the
//! same stream on Binance) stay two subscriptions with their own names, each echoed as the
//! client spelled it. What the hub fans out is the [`Topic::fanout_key`]: the two spellings of
//! one stream share it, so its events are rendered once for both (see `fanout::hub`).

use std::fmt::{self, Write};

/// Index of a symbol in the feed.
pub type SymbolId = u16;

/// The symbols stream names can name: the feed, as the protocol sees it. A trait so the
/// vocabulary does not depend on where market data comes from.
pub trait SymbolTable {
    /// Index of an upper-case symbol such as `BTCUSDT`.
    fn index_of(&self, symbol_upper: &str) -> Option<usize>;
    /// The symbol as stream names spell it (`btcusdt`).
    fn lower_name(&self, symbol: SymbolId) -> String;
}

/// Update speed of diff and partial depth streams, as written in the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Speed {
    /// No suffix: 1000 ms, for diffs and partial depth alike (as on Binance, whose spot API has
    /// no real-time diff).
    Unspecified,
    /// `@0ms`, diffs only: every engine update, bookcast's real-time extension (SPEC.md, "Names").
    Ms0,
    Ms100,
    /// `@1000ms`: another spelling of [`Speed::Unspecified`] (binance-connector sends it).
    Ms1000,
}

impl Speed {
    fn suffix(self) -> &'static str {
        match self {
            Speed::Unspecified => "",
            Speed::Ms0 => "@0ms",
            Speed::Ms100 => "@100ms",
            Speed::Ms1000 => "@1000ms",
        }
    }
}

/// What a per-symbol stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Diff(Speed),
    Partial { levels: u8, speed: Speed },
    Trade,
    AggTrade,
    BookTicker,
    Kline(KlineInterval),
    MiniTicker,
    Ticker,
}

impl StreamKind {
    /// A short, fixed label for metrics (low cardinality by construction).
    pub fn label(self) -> &'static str {
        match self {
            StreamKind::Diff(_) => "depth",
            StreamKind::Partial { .. } => "partial_depth",
            StreamKind::Trade => "trade",
            StreamKind::AggTrade => "aggTrade",
            StreamKind::BookTicker => "bookTicker",
            StreamKind::Kline(_) => "kline",
            StreamKind::MiniTicker => "miniTicker",
            StreamKind::Ticker => "ticker",
        }
    }

    /// Whether the payload has time fields, i.e. differs between `timeUnit`s.
    pub fn has_time_fields(self) -> bool {
        !matches!(self, StreamKind::Partial { .. } | StreamKind::BookTicker)
    }
}

/// One subscribable stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Symbol {
        symbol: SymbolId,
        kind: StreamKind,
    },
    /// `!miniTicker@arr`: every symbol's mini ticker in one array.
    AllMiniTickers,
    /// `!stats@1s`: the server's own health once a second (bookcast's addition, for
    /// `/dashboard`; see [`crate::metrics::live_stats`]).
    ServerStats,
}

impl Topic {
    pub fn label(self) -> &'static str {
        match self {
            Topic::Symbol { kind, .. } => kind.label(),
            Topic::AllMiniTickers => "miniTicker_arr",
            Topic::ServerStats => "stats",
        }
    }

    pub fn has_time_fields(self) -> bool {
        match self {
            Topic::Symbol { kind, .. } => kind.has_time_fields(),
            Topic::AllMiniTickers | Topic::ServerStats => true,
        }
    }

    /// The topic whose events this name carries: `@depth@1000ms` (and `@depth<N>@1000ms`) is
    /// another spelling of the unsuffixed name, so both share one key, one rendering per event
    /// and one subscriber list. Every other topic is its own key. Events are published under
    /// keys only.
    pub fn fanout_key(self) -> Topic {
        match self {
            Topic::Symbol { symbol, kind } => Topic::Symbol {
                symbol,
                kind: match kind {
                    StreamKind::Diff(Speed::Ms1000) => StreamKind::Diff(Speed::Unspecified),
                    StreamKind::Partial {
                        levels,
                        speed: Speed::Ms1000,
                    } => StreamKind::Partial {
                        levels,
                        speed: Speed::Unspecified,
                    },
                    kind => kind,
                },
            },
            other => other,
        }
    }

    /// Whether this name is the second spelling of its [`fanout_key`](Self::fanout_key).
    pub fn is_synonym(self) -> bool {
        self.fanout_key() != self
    }

    /// The second spelling of a key, if it has one (`btcusdt@depth` -> `btcusdt@depth@1000ms`).
    pub fn synonym(self) -> Option<Topic> {
        match self {
            Topic::Symbol {
                symbol,
                kind: StreamKind::Diff(Speed::Unspecified),
            } => Some(Topic::Symbol {
                symbol,
                kind: StreamKind::Diff(Speed::Ms1000),
            }),
            Topic::Symbol {
                symbol,
                kind:
                    StreamKind::Partial {
                        levels,
                        speed: Speed::Unspecified,
                    },
            } => Some(Topic::Symbol {
                symbol,
                kind: StreamKind::Partial {
                    levels,
                    speed: Speed::Ms1000,
                },
            }),
            _ => None,
        }
    }

    /// The stream name, as clients write it (lower-case symbol).
    pub fn name(self, symbols: &(impl SymbolTable + ?Sized)) -> String {
        let mut out = String::new();
        self.write_name(symbols, &mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_name(self, symbols: &(impl SymbolTable + ?Sized), out: &mut String) -> fmt::Result {
        let (symbol, kind) = match self {
            Topic::AllMiniTickers => return out.write_str("!miniTicker@arr"),
            Topic::ServerStats => return out.write_str(SERVER_STATS),
            Topic::Symbol { symbol, kind } => (symbol, kind),
        };
        out.write_str(&symbols.lower_name(symbol))?;
        match kind {
            StreamKind::Diff(speed) => write!(out, "@depth{}", speed.suffix()),
            StreamKind::Partial { levels, speed } => {
                write!(out, "@depth{levels}{}", speed.suffix())
            }
            StreamKind::Trade => out.write_str("@trade"),
            StreamKind::AggTrade => out.write_str("@aggTrade"),
            StreamKind::BookTicker => out.write_str("@bookTicker"),
            StreamKind::Kline(interval) => write!(out, "@kline_{}", interval.as_str()),
            StreamKind::MiniTicker => out.write_str("@miniTicker"),
            StreamKind::Ticker => out.write_str("@ticker"),
        }
    }
}

/// The kline intervals bookcast serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KlineInterval {
    S1,
    M1,
    M5,
    M15,
    H1,
}

impl KlineInterval {
    pub const ALL: [KlineInterval; 5] = [
        KlineInterval::S1,
        KlineInterval::M1,
        KlineInterval::M5,
        KlineInterval::M15,
        KlineInterval::H1,
    ];

    /// The name used in stream names and the payload's `i` field.
    pub fn as_str(self) -> &'static str {
        match self {
            KlineInterval::S1 => "1s",
            KlineInterval::M1 => "1m",
            KlineInterval::M5 => "5m",
            KlineInterval::M15 => "15m",
            KlineInterval::H1 => "1h",
        }
    }

    /// Parses a stream-name interval such as `"15m"`; case-sensitive like Binance (`"1M"` is a
    /// month there, not a minute).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|interval| interval.as_str() == text)
    }

    /// The interval length in microseconds.
    pub fn micros(self) -> u64 {
        const SEC: u64 = 1_000_000;
        match self {
            KlineInterval::S1 => SEC,
            KlineInterval::M1 => 60 * SEC,
            KlineInterval::M5 => 5 * 60 * SEC,
            KlineInterval::M15 => 15 * 60 * SEC,
            KlineInterval::H1 => 60 * 60 * SEC,
        }
    }

    /// How often Binance pushes the open kline: every 1000 ms for 1s klines, 2000 ms otherwise.
    pub fn push_period_us(self) -> u64 {
        match self {
            KlineInterval::S1 => 1_000_000,
            _ => 2_000_000,
        }
    }

    /// Start of the interval containing `time_us`.
    pub(crate) fn align(self, time_us: u64) -> u64 {
        time_us - time_us % self.micros()
    }
}

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamNameError {
    /// Not of any known stream shape.
    Malformed,
    /// Well formed, but the symbol is not in the feed.
    UnknownSymbol,
}

/// The name of [`Topic::ServerStats`].
pub const SERVER_STATS: &str = "!stats@1s";

/// Longest name worth looking at; anything longer cannot be valid.
const MAX_NAME_LEN: usize = 64;

/// Parses a stream name. The symbol part is matched case-insensitively; the rest exactly,
/// as Binance spells it (`aggTrade`, `bookTicker`, `miniTicker`).
pub fn parse(name: &str, symbols: &(impl SymbolTable + ?Sized)) -> Result<Topic, StreamNameError> {
    if name.len() > MAX_NAME_LEN || !name.is_ascii() {
        return Err(StreamNameError::Malformed);
    }
    if name == "!miniTicker@arr" {
        return Ok(Topic::AllMiniTickers);
    }
    if name == SERVER_STATS {
        return Ok(Topic::ServerStats);
    }
    let (symbol, rest) = name.split_once('@').ok_or(StreamNameError::Malformed)?;
    let kind = parse_kind(rest).ok_or(StreamNameError::Malformed)?;
    if symbol.is_empty() || !symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StreamNameError::Malformed);
    }
    let index = symbols
        .index_of(&symbol.to_ascii_uppercase())
        .ok_or(StreamNameError::UnknownSymbol)?;
    let symbol = SymbolId::try_from(index).map_err(|_| StreamNameError::UnknownSymbol)?;
    Ok(Topic::Symbol { symbol, kind })
}

fn parse_speed(suffix: Option<&str>) -> Option<Speed> {
    match suffix {
        None => Some(Speed::Unspecified),
        Some("0ms") => Some(Speed::Ms0),
        Some("100ms") => Some(Speed::Ms100),
        Some("1000ms") => Some(Speed::Ms1000),
        Some(_) => None,
    }
}

fn parse_kind(rest: &str) -> Option<StreamKind> {
    let (head, suffix) = match rest.split_once('@') {
        Some((head, suffix)) => (head, Some(suffix)),
        None => (rest, None),
    };
    if let Some(levels) = head.strip_prefix("depth") {
        let speed = parse_speed(suffix)?;
        return match levels {
            "" => Some(StreamKind::Diff(speed)),
            // A partial book is a picture of the book at a tick; it has no real-time form.
            "5" | "10" | "20" if speed != Speed::Ms0 => Some(StreamKind::Partial {
                levels: levels.parse().ok()?,
                speed,
            }),
            _ => None,
        };
    }
    if suffix.is_some() {
        return None;
    }
    if let Some(interval) = head.strip_prefix("kline_") {
        return KlineInterval::parse(interval).map(StreamKind::Kline);
    }
    match head {
        "trade" => Some(StreamKind::Trade),
        "aggTrade" => Some(StreamKind::AggTrade),
        "bookTicker" => Some(StreamKind::BookTicker),
        "miniTicker" => Some(StreamKind::MiniTicker),
        "ticker" => Some(StreamKind::Ticker),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::feed::Feed;

    #[test]
    fn names_round_trip() {
        let feed = Feed::embedded_default();
        for name in [
            "btcusdt@depth",
            "btcusdt@depth@100ms",
            "btcusdt@depth@1000ms",
            "btcusdt@depth@0ms",
            "btcusdt@depth5",
            "ethusdt@depth10@100ms",
            "ethusdt@depth20@1000ms",
            "btcusdt@trade",
            "btcusdt@aggTrade",
            "btcusdt@bookTicker",
            "btcusdt@kline_1s",
            "btcusdt@kline_1m",
            "btcusdt@kline_1h",
            "btcusdt@miniTicker",
            "btcusdt@ticker",
            "!miniTicker@arr",
        ] {
            let topic = parse(name, &feed).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(topic.name(&feed), name);
        }
        assert_eq!(
            parse("BTCUSDT@trade", &feed).unwrap().name(&feed),
            "btcusdt@trade"
        );
    }

    /// `@1000ms` names share their unsuffixed twin's key (one rendering, one subscriber list)
    /// but keep their own name; `@0ms` and `@100ms` are streams of their own.
    #[test]
    fn synonyms_share_a_fanout_key() {
        let feed = Feed::embedded_default();
        let topic = |name: &str| parse(name, &feed).unwrap();
        for (key, synonym) in [
            ("btcusdt@depth", "btcusdt@depth@1000ms"),
            ("ethusdt@depth20", "ethusdt@depth20@1000ms"),
        ] {
            assert_eq!(topic(synonym).fanout_key(), topic(key));
            assert!(topic(synonym).is_synonym());
            assert_eq!(topic(key).synonym(), Some(topic(synonym)));
            assert_eq!(topic(synonym).name(&feed), synonym);
        }
        for name in [
            "btcusdt@depth",
            "btcusdt@depth@0ms",
            "btcusdt@depth@100ms",
            "btcusdt@depth5@100ms",
            "btcusdt@trade",
            "!miniTicker@arr",
        ] {
            assert_eq!(topic(name).fanout_key(), topic(name), "{name}");
            assert!(!topic(name).is_synonym(), "{name}");
        }
        assert_eq!(topic("btcusdt@depth@0ms").synonym(), None);
    }

    #[test]
    fn refuses_bad_names() {
        let feed = Feed::embedded_default();
        for name in [
            "",
            "btcusdt",
            "btcusdt@",
            "@trade",
            "btcusdt@depth7",
            "btcusdt@depth@10ms",
            "btcusdt@depth@00ms",
            "btcusdt@depth5@0ms",
            "btcusdt@trade@100ms",
            "btcusdt@kline_2m",
            "btcusdt@aggtrade",
            "btc usdt@trade",
            "btcusdt@trade\u{0}",
            "btcusdt@depth5@",
        ] {
            assert_eq!(
                parse(name, &feed),
                Err(StreamNameError::Malformed),
                "{name:?}"
            );
        }
        assert_eq!(
            parse("nosuchcoin@trade", &feed),
            Err(StreamNameError::UnknownSymbol)
        );
    }
}
