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
    Partial {
        levels: u8,
        speed: Speed,
    },
    Trade,
    AggTrade,
    BookTicker,
    Kline(KlineInterval),
    /// `<s>@kline_<i>@+08:00`: intervals open and close in UTC+8; times stay UTC.
    KlineUtc8(KlineInterval),
    MiniTicker,
    Ticker,
    /// `<s>@ticker_<w>`: the rolling-window ticker.
    RollingTicker(TickerWindow),
    /// `<s>@avgPrice`: the 5-minute average price.
    AvgPrice,
}

/// The windows of the rolling-window ticker streams (`@ticker_1h`, `@ticker_4h`, `@ticker_1d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TickerWindow {
    H1,
    H4,
    D1,
}

impl TickerWindow {
    pub const ALL: [TickerWindow; 3] = [TickerWindow::H1, TickerWindow::H4, TickerWindow::D1];

    /// The name in stream names (`ticker_1h`); the payload's `e` is this followed by `Ticker`.
    pub fn as_str(self) -> &'static str {
        match self {
            TickerWindow::H1 => "1h",
            TickerWindow::H4 => "4h",
            TickerWindow::D1 => "1d",
        }
    }

    /// The payload's event type, `1hTicker`.
    pub fn event(self) -> &'static str {
        match self {
            TickerWindow::H1 => "1hTicker",
            TickerWindow::H4 => "4hTicker",
            TickerWindow::D1 => "1dTicker",
        }
    }

    pub fn micros(self) -> u64 {
        const HOUR: u64 = 3_600_000_000;
        match self {
            TickerWindow::H1 => HOUR,
            TickerWindow::H4 => 4 * HOUR,
            TickerWindow::D1 => 24 * HOUR,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == text)
    }
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
            StreamKind::Kline(_) | StreamKind::KlineUtc8(_) => "kline",
            StreamKind::MiniTicker => "miniTicker",
            StreamKind::Ticker => "ticker",
            StreamKind::RollingTicker(_) => "rollingTicker",
            StreamKind::AvgPrice => "avgPrice",
        }
    }

    /// Whether the payload has time fields, i.e. differs between `timeUnit`s.
    pub fn has_time_fields(self) -> bool {
        !matches!(self, StreamKind::Partial { .. } | StreamKind::BookTicker)
    }
}

/// A connection's streams, in subscription order. Inline up to four (most connections follow
/// one or two), so following a stream costs no allocation of its own; the session and the hub
/// each hold one per connection.
pub type TopicList = smallvec::SmallVec<[Topic; 4]>;

/// One subscribable stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Symbol {
        symbol: SymbolId,
        kind: StreamKind,
    },
    /// `!miniTicker@arr`: the mini tickers of the symbols that traded in the last second.
    AllMiniTickers,
    /// `!ticker_<w>@arr`: the rolling-window tickers of the symbols that traded in the last
    /// second.
    AllRollingTickers(TickerWindow),
    /// `!stats@1s`: the server's own health once a second (bookcast's addition, for
    /// `/dashboard`; see [`crate::metrics::live_stats`]).
    ServerStats,
}

impl Topic {
    pub fn label(self) -> &'static str {
        match self {
            Topic::Symbol { kind, .. } => kind.label(),
            Topic::AllMiniTickers => "miniTicker_arr",
            Topic::AllRollingTickers(_) => "rollingTicker_arr",
            Topic::ServerStats => "stats",
        }
    }

    pub fn has_time_fields(self) -> bool {
        match self {
            Topic::Symbol { kind, .. } => kind.has_time_fields(),
            Topic::AllMiniTickers | Topic::AllRollingTickers(_) | Topic::ServerStats => true,
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

    /// Whether `resume=` applies (SPEC.md): diff depth streams (resumed by `u`), `@trade` (by
    /// `t`) and `@aggTrade` (by `a`), whose events are numbered.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            Topic::Symbol {
                kind: StreamKind::Diff(_) | StreamKind::Trade | StreamKind::AggTrade,
                ..
            }
        )
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
            Topic::AllRollingTickers(window) => {
                return write!(out, "!ticker_{}@arr", window.as_str())
            }
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
            StreamKind::KlineUtc8(interval) => write!(out, "@kline_{}@+08:00", interval.as_str()),
            StreamKind::MiniTicker => out.write_str("@miniTicker"),
            StreamKind::Ticker => out.write_str("@ticker"),
            StreamKind::RollingTicker(window) => write!(out, "@ticker_{}", window.as_str()),
            StreamKind::AvgPrice => out.write_str("@avgPrice"),
        }
    }
}

/// The kline intervals Binance serves, in its order (`1s` to `1M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KlineInterval {
    S1,
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H2,
    H4,
    H6,
    H8,
    H12,
    D1,
    D3,
    W1,
    /// A calendar month (`1M`): the one interval whose length varies.
    Mo1,
}

const SEC_US: u64 = 1_000_000;
const DAY_US: u64 = 86_400 * SEC_US;

impl KlineInterval {
    pub const ALL: [KlineInterval; 16] = [
        KlineInterval::S1,
        KlineInterval::M1,
        KlineInterval::M3,
        KlineInterval::M5,
        KlineInterval::M15,
        KlineInterval::M30,
        KlineInterval::H1,
        KlineInterval::H2,
        KlineInterval::H4,
        KlineInterval::H6,
        KlineInterval::H8,
        KlineInterval::H12,
        KlineInterval::D1,
        KlineInterval::D3,
        KlineInterval::W1,
        KlineInterval::Mo1,
    ];

    /// The name used in stream names and the payload's `i` field.
    pub fn as_str(self) -> &'static str {
        match self {
            KlineInterval::S1 => "1s",
            KlineInterval::M1 => "1m",
            KlineInterval::M3 => "3m",
            KlineInterval::M5 => "5m",
            KlineInterval::M15 => "15m",
            KlineInterval::M30 => "30m",
            KlineInterval::H1 => "1h",
            KlineInterval::H2 => "2h",
            KlineInterval::H4 => "4h",
            KlineInterval::H6 => "6h",
            KlineInterval::H8 => "8h",
            KlineInterval::H12 => "12h",
            KlineInterval::D1 => "1d",
            KlineInterval::D3 => "3d",
            KlineInterval::W1 => "1w",
            KlineInterval::Mo1 => "1M",
        }
    }

    /// Parses a stream-name interval such as `"15m"`; case-sensitive like Binance (`"1M"` is a
    /// month there, `"1m"` a minute).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|interval| interval.as_str() == text)
    }

    /// The interval length in microseconds; `None` for `1M`, whose length is the month's.
    pub fn fixed_micros(self) -> Option<u64> {
        const MIN: u64 = 60 * SEC_US;
        const HOUR: u64 = 60 * MIN;
        Some(match self {
            KlineInterval::S1 => SEC_US,
            KlineInterval::M1 => MIN,
            KlineInterval::M3 => 3 * MIN,
            KlineInterval::M5 => 5 * MIN,
            KlineInterval::M15 => 15 * MIN,
            KlineInterval::M30 => 30 * MIN,
            KlineInterval::H1 => HOUR,
            KlineInterval::H2 => 2 * HOUR,
            KlineInterval::H4 => 4 * HOUR,
            KlineInterval::H6 => 6 * HOUR,
            KlineInterval::H8 => 8 * HOUR,
            KlineInterval::H12 => 12 * HOUR,
            KlineInterval::D1 => DAY_US,
            KlineInterval::D3 => 3 * DAY_US,
            KlineInterval::W1 => 7 * DAY_US,
            KlineInterval::Mo1 => return None,
        })
    }

    /// How often Binance pushes the open kline: every 1000 ms for 1s klines, 2000 ms otherwise.
    pub fn push_period_us(self) -> u64 {
        match self {
            KlineInterval::S1 => 1_000_000,
            _ => 2_000_000,
        }
    }

    /// Start of the interval containing `time_us` when intervals open and close in the time
    /// zone `offset_us` east of UTC (times stay UTC). Weeks open on Monday 00:00 and months on
    /// the 1st, as on Binance; every other interval counts from the Unix epoch.
    pub fn align(self, time_us: u64, offset_us: i64) -> u64 {
        let local = i128::from(time_us) + i128::from(offset_us);
        let local_open = match self {
            KlineInterval::Mo1 => {
                let day = local.div_euclid(i128::from(DAY_US));
                let (year, month, _) = civil_from_days(day);
                days_from_civil(year, month, 1) * i128::from(DAY_US)
            }
            // 1970-01-01 was a Thursday: Mondays are 4 days off the epoch's 7-day grid.
            KlineInterval::W1 => {
                let shift = i128::from(4 * DAY_US);
                let week = i128::from(7 * DAY_US);
                local - (local - shift).rem_euclid(week)
            }
            fixed => {
                let length = i128::from(fixed.fixed_micros().unwrap_or(SEC_US));
                local - local.rem_euclid(length)
            }
        };
        clamp_u64(local_open - i128::from(offset_us))
    }

    /// Start of the interval after the one opening at `open_us` (its exclusive end).
    pub fn next_open(self, open_us: u64, offset_us: i64) -> u64 {
        match self.fixed_micros() {
            Some(length) => open_us.saturating_add(length),
            None => {
                let local = i128::from(open_us) + i128::from(offset_us);
                let day = local.div_euclid(i128::from(DAY_US));
                let (year, month, _) = civil_from_days(day);
                let (year, month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                clamp_u64(
                    days_from_civil(year, month, 1) * i128::from(DAY_US) - i128::from(offset_us),
                )
            }
        }
    }

    /// Whether intervals open at the same instants in the zone `offset_us` as in UTC, so one
    /// series serves both (an 8-hour offset moves `6h`, `12h` and longer intervals only).
    pub fn offset_neutral(self, offset_us: i64) -> bool {
        match self {
            KlineInterval::Mo1 => offset_us == 0,
            fixed => {
                let length = i128::from(fixed.fixed_micros().unwrap_or(SEC_US));
                i128::from(offset_us).rem_euclid(length) == 0
            }
        }
    }
}

/// UTC+8, the one time-zone variant of kline streams (`<s>@kline_<i>@+08:00`).
pub const UTC8_OFFSET_US: i64 = 8 * 3600 * 1_000_000;

fn clamp_u64(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01 (Hinnant's `days_from_civil`).
fn days_from_civil(year: i128, month: i128, day: i128) -> i128 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    if let Some(window) = name
        .strip_prefix("!ticker_")
        .and_then(|rest| rest.strip_suffix("@arr"))
    {
        return TickerWindow::parse(window)
            .map(Topic::AllRollingTickers)
            .ok_or(StreamNameError::Malformed);
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
    if let Some(interval) = head.strip_prefix("kline_") {
        let interval = KlineInterval::parse(interval)?;
        return match suffix {
            None => Some(StreamKind::Kline(interval)),
            Some("+08:00") => Some(StreamKind::KlineUtc8(interval)),
            Some(_) => None,
        };
    }
    if suffix.is_some() {
        return None;
    }
    if let Some(window) = head.strip_prefix("ticker_") {
        return TickerWindow::parse(window).map(StreamKind::RollingTicker);
    }
    match head {
        "avgPrice" => Some(StreamKind::AvgPrice),
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
            "btcusdt@kline_3m",
            "btcusdt@kline_1M",
            "btcusdt@kline_1w",
            "btcusdt@kline_1d@+08:00",
            "btcusdt@kline_1m@+08:00",
            "btcusdt@ticker_1h",
            "btcusdt@ticker_4h",
            "btcusdt@ticker_1d",
            "!ticker_1h@arr",
            "!ticker_1d@arr",
            "btcusdt@avgPrice",
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
            "btcusdt@kline_1mo",
            "btcusdt@kline_1d@+8:00",
            "btcusdt@kline_1d@+09:00",
            "btcusdt@ticker_2h",
            "btcusdt@ticker_1h@arr",
            "btcusdt@avgprice",
            "!ticker_2h@arr",
            "!ticker@arr",
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
