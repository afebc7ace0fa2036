//! The derivation stage for a whole feed: every symbol's [`SymbolStreams`], the timer ticks they
//! share, and the one stream that spans symbols, `!miniTicker@arr`.

use super::stats::rolling::{self, TickerStats};
use super::symbol::SymbolStreams;
use super::Publisher;
use crate::market::feed::SymbolSpec;
use crate::market::sim::{MarketSim, Step};
use crate::protocol::json;
use crate::protocol::stream::{StreamKind, SymbolId, TickerWindow, Topic};
use bytes::Bytes;

/// Every symbol's derivation state, in feed order.
pub struct Streams {
    symbols: Vec<SymbolStreams>,
    /// 1000 ms ticks since start, to push non-1s klines every other second as Binance does.
    seconds: u64,
    /// REST history bounds (trades, klines): this server's configuration, not derived state.
    history: (usize, usize),
}

impl Streams {
    /// The stage for `symbols`, each built with [`SymbolStreams::from_snapshot`]. They must be in
    /// feed order: the symbol at index `i` has id `i`.
    pub fn new(symbols: Vec<SymbolStreams>) -> Self {
        debug_assert!(
            symbols
                .iter()
                .enumerate()
                .all(|(index, s)| usize::from(s.id()) == index),
            "symbols out of feed order"
        );
        Streams {
            symbols,
            seconds: 0,
            history: (0, 0),
        }
    }

    /// The stage for freshly built simulations `sims` of `specs` (both in feed order), at
    /// `start_us`: each symbol starts from a copy of its simulation's book, exactly as a gateway
    /// starts from the engine's snapshot.
    pub fn from_simulations(specs: &[SymbolSpec], sims: &[MarketSim], start_us: u64) -> Self {
        Self::new(
            sims.iter()
                .zip(specs)
                .enumerate()
                .map(|(index, (sim, spec))| {
                    SymbolStreams::from_snapshot(
                        index as SymbolId,
                        spec.clone(),
                        sim.book().clone(),
                        sim.last_update_id(),
                        start_us,
                    )
                })
                .collect(),
        )
    }

    /// A stage that continues from `symbols` (each restored from a snapshot taken at the
    /// same tick) after `seconds` 1000 ms ticks.
    pub fn restore(symbols: Vec<SymbolStreams>, seconds: u64) -> Self {
        let mut streams = Self::new(symbols);
        streams.seconds = seconds;
        streams
    }

    /// 1000 ms ticks since the stage started: part of its state, for snapshots.
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    /// Every symbol rebased on `snapshot`, a later state of the same feed: see
    /// [`SymbolStreams::rebase`].
    pub fn rebase<P: Publisher + ?Sized>(&mut self, snapshot: Streams, now_us: u64, out: &mut P) {
        self.seconds = snapshot.seconds;
        for (symbol, later) in self.symbols.iter_mut().zip(snapshot.symbols) {
            symbol.rebase(later, now_us, out);
            symbol.set_history(self.history.0, self.history.1);
        }
    }

    pub fn symbols(&self) -> &[SymbolStreams] {
        &self.symbols
    }

    /// One symbol's state. Panics if `symbol` is not in the feed.
    pub fn symbol(&self, symbol: SymbolId) -> &SymbolStreams {
        &self.symbols[usize::from(symbol)]
    }

    /// Where a step enters the stage: see [`SymbolStreams::on_step`].
    pub fn on_step<P: Publisher + ?Sized>(
        &mut self,
        symbol: SymbolId,
        step: &Step,
        now_us: u64,
        out: &mut P,
    ) {
        self.symbols[usize::from(symbol)].on_step(step, now_us, out);
    }

    /// The 100 ms tick, every symbol in feed order: see [`SymbolStreams::every_100ms`].
    pub fn every_100ms<P: Publisher + ?Sized>(&mut self, now_us: u64, out: &mut P) {
        for symbol in &mut self.symbols {
            symbol.every_100ms(now_us, out);
        }
    }

    /// The 1000 ms tick: every symbol's windows, partial depth, klines and `@avgPrice`
    /// ([`SymbolStreams::every_1000ms`]), then every symbol's tickers, then `!miniTicker@arr`,
    /// then each rolling window's `@ticker_<w>` and `!ticker_<w>@arr`.
    ///
    /// The arrays carry only the symbols that traded since the previous tick, as Binance's
    /// carry only the tickers that changed, and are not sent when none did.
    pub fn every_1000ms<P: Publisher + ?Sized>(&mut self, now_us: u64, out: &mut P) {
        self.seconds += 1;
        for symbol in &mut self.symbols {
            symbol.every_1000ms(now_us, self.seconds, out);
        }
        let traded: Vec<bool> = self.symbols.iter_mut().map(|s| s.take_traded()).collect();
        let all = Topic::AllMiniTickers;
        let want_all = out.wants(&all);
        let mut changed: Vec<(usize, TickerStats)> = Vec::new();
        for (index, symbol) in self.symbols.iter_mut().enumerate() {
            let force = want_all && traded[index];
            if let Some(stats) = symbol.publish_tickers(now_us, force, out) {
                if force {
                    changed.push((index, stats));
                }
            }
        }
        let symbols = &self.symbols;
        if !changed.is_empty() {
            out.publish(all, &mut |buf, unit| {
                write_array(buf, &changed, |buf, index, stats| {
                    rolling::write_mini_ticker(
                        buf,
                        &symbols[index].spec().symbol,
                        stats,
                        now_us,
                        unit,
                    )
                })
            });
        }
        for window in TickerWindow::ALL {
            let all = Topic::AllRollingTickers(window);
            let want_all = out.wants(&all);
            changed.clear();
            for (index, symbol) in symbols.iter().enumerate() {
                let topic = Topic::Symbol {
                    symbol: symbol.id(),
                    kind: StreamKind::RollingTicker(window),
                };
                let in_array = want_all && traded[index];
                if !(in_array || out.wants(&topic)) {
                    continue;
                }
                let stats = symbol.window_stats(now_us, window);
                symbol.publish_rolling_ticker(window, &stats, now_us, out);
                if in_array {
                    changed.push((index, stats));
                }
            }
            if !changed.is_empty() {
                out.publish(all, &mut |buf, unit| {
                    write_array(buf, &changed, |buf, index, stats| {
                        rolling::write_rolling_ticker(
                            buf,
                            window.event(),
                            &symbols[index].spec().symbol,
                            stats,
                            now_us,
                            unit,
                        )
                    })
                });
            }
        }
    }

    /// Keeps at most `trades` trades (and aggregates) and `klines` closed klines per interval
    /// for REST, in every symbol, from now on (also across [`rebase`](Self::rebase)).
    pub fn set_history(&mut self, trades: usize, klines: usize) {
        self.history = (trades, klines);
        for symbol in &mut self.symbols {
            symbol.set_history(trades, klines);
        }
    }

    /// Keeps `span` of updates, trades and aggregates per symbol for `resume=` (`--history`;
    /// zero keeps none), from now on.
    pub fn set_recent_span(&mut self, span: std::time::Duration) {
        let span_us = u64::try_from(span.as_micros()).unwrap_or(u64::MAX);
        for symbol in &mut self.symbols {
            symbol.set_recent_span(span_us);
        }
    }

    /// Puts each symbol's older `resume=` history in front of its own (see
    /// [`Recent::prepend`](super::recent::Recent::prepend)).
    pub fn prepend_recent(&mut self, histories: Vec<(SymbolId, super::recent::Recent)>) {
        for (symbol, older) in histories {
            if let Some(state) = self.symbols.get_mut(usize::from(symbol)) {
                state.prepend_recent(older);
            }
        }
    }

    /// Bytes the `resume=` history holds, every symbol.
    pub fn recent_bytes(&self) -> usize {
        self.symbols.iter().map(SymbolStreams::recent_bytes).sum()
    }

    /// The `/api/v3/depth` body for `symbol` at its last applied update id. Panics if `symbol`
    /// is not in the feed.
    pub fn snapshot(&self, symbol: SymbolId, limit: usize) -> Bytes {
        self.symbol(symbol).snapshot(limit)
    }
}

/// Appends `[item,item,..]`, one item per `(symbol index, statistics)`.
fn write_array(
    buf: &mut Vec<u8>,
    items: &[(usize, TickerStats)],
    mut write: impl FnMut(&mut Vec<u8>, usize, &TickerStats),
) {
    json::push_array(buf, items, |buf, (index, stats)| write(buf, *index, stats));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::symbol::tests::{Recorder, T0};
    use crate::market::feed::Feed;
    use crate::market::sim::MarketSim;

    /// Two stages fed the same steps and ticks publish the same bytes from the moment both
    /// listen, whatever one of them wanted before: what a gateway derives does not depend on
    /// which streams had subscribers. The run crosses minute boundaries, so klines close and
    /// the rolling ticker fills buckets on both sides of the switch.
    #[test]
    fn later_events_do_not_depend_on_what_was_wanted_before() {
        const SYMBOLS: usize = 3;
        const TICKS_10MS: u64 = 15_000;
        let feed = Feed::embedded_default();
        // Half a minute in, so the first minute closes early in the run.
        let start = T0 + 30_000_000;
        let mut sims: Vec<MarketSim> = feed.symbols[..SYMBOLS].iter().map(MarketSim::new).collect();
        let stage = |sims: &[MarketSim]| Streams::from_simulations(&feed.symbols, sims, start);
        let (mut always, mut late) = (stage(&sims), stage(&sims));
        let mut always_out = Recorder {
            wants: true,
            ..Recorder::default()
        };
        let mut late_out = Recorder::default();
        let mut step = Step::default();
        for tick in 1..=TICKS_10MS {
            if tick == TICKS_10MS / 2 {
                always_out.events.clear();
                late_out.wants = true;
            }
            let now_us = start + tick * 10_000;
            for (index, sim) in sims.iter_mut().enumerate() {
                sim.step(&mut step);
                always.on_step(index as SymbolId, &step, now_us, &mut always_out);
                late.on_step(index as SymbolId, &step, now_us, &mut late_out);
            }
            if tick % 10 == 0 {
                always.every_100ms(now_us, &mut always_out);
                late.every_100ms(now_us, &mut late_out);
            }
            if tick % 100 == 0 {
                always.every_1000ms(now_us, &mut always_out);
                late.every_1000ms(now_us, &mut late_out);
            }
        }
        assert!(always_out.events.len() > 20_000);
        let seen = |wanted: &dyn Fn(&Topic, &[u8]) -> bool| {
            always_out
                .events
                .iter()
                .any(|(topic, ms, _)| wanted(topic, ms))
        };
        assert!(seen(&|topic, _| *topic == Topic::AllMiniTickers));
        assert!(seen(&|_, ms| ms.starts_with(b"{\"e\":\"24hrTicker\"")));
        assert!(seen(&|_, ms| ms.starts_with(b"{\"e\":\"kline\"")
            && ms.windows(8).any(|w| w == b"\"x\":true")));
        assert_eq!(always_out.events.len(), late_out.events.len());
        for (n, (a, b)) in always_out.events.iter().zip(&late_out.events).enumerate() {
            assert!(a == b, "event {n} differs: {a:?} vs {b:?}");
        }
        for (index, sim) in sims.iter().enumerate() {
            let id = index as SymbolId;
            assert_eq!(always.snapshot(id, 100), late.snapshot(id, 100));
            assert!(always.symbol(id).book() == sim.book());
        }
    }
}
