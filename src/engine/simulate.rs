//! The local market: every symbol's simulation on its own clock, and the 100 ms timer.
//!
//! The all-in-one server and the cluster engine both drive the derivation stage with it. The
//! cluster engine also gives it a [`Journal`], which records every step and tick (to NATS)
//! so gateways can derive the same events.

use super::{Market, Stage, Tick};
use crate::derive::Streams;
use crate::market::feed::Feed;
use crate::market::sim::{MarketSim, Step};
use crate::protocol::stream::SymbolId;
use std::time::{Duration, Instant};

/// The timer period: every tick flushes the 100 ms streams; every tenth, the 1000 ms ones.
pub const TICK_PERIOD: Duration = Duration::from_millis(100);

/// Steps falling due within this long of each other are taken together, in one batch.
///
/// Each batch wakes every shard with a subscriber (a futex wake and two context switches per
/// shard), so at the default feed's ~1,600 steps a second, stepping each symbol exactly on
/// its own clock cost more in wakeups than in rendering. Batching them limits the clock to
/// 500 batches a second (commands and resync requests may still wake the engine between).
/// A step, or the 100 ms tick, is taken at most this much after its nominal time, and its
/// events are stamped when it is taken, so no latency measured from them grows; a step due
/// just after a tick may land in the window that tick closes, as if it had come a moment
/// sooner.
pub const STEP_QUANTUM: Duration = Duration::from_millis(2);

/// Where a simulation records what it does, in order, before it is derived: the cluster
/// engine's NATS stream.
pub trait Journal: Send {
    /// Records one step. May block while the journal is full (its broker is behind or gone):
    /// the market then pauses rather than losing a step.
    fn step(&mut self, symbol: SymbolId, step: &Step, now_us: u64);

    /// Records one tick, after the stage has handled it. `sims` and `streams` are the whole
    /// state at that point, for a snapshot.
    fn tick(&mut self, tick: Tick, sims: &[&MarketSim], streams: &Streams);
}

/// One symbol's simulation and its clock.
struct SimSymbol {
    sim: MarketSim,
    period: Duration,
    next_step: Instant,
}

/// Every symbol's simulation and the timer: a [`Market`].
pub struct Simulation {
    sims: Vec<SimSymbol>,
    next_tick: Instant,
    /// The last tick's number (0 before the first).
    ticks: u64,
    /// The step being handed from a simulation to the stage, reused.
    step: Step,
    journal: Option<Box<dyn Journal>>,
}

impl Simulation {
    /// A fresh simulation of `feed`, and the derivation stage it starts: each symbol's stage
    /// starts from a copy of its simulation's freshly built book, exactly as a gateway starts
    /// from the engine's snapshot.
    pub fn new(feed: &Feed, journal: Option<Box<dyn Journal>>) -> (Self, Streams) {
        let sims: Vec<MarketSim> = feed.symbols.iter().map(MarketSim::new).collect();
        let streams = Self::initial_stage(feed, &sims);
        (Self::resume(feed, sims, 0, journal), streams)
    }

    /// The derivation stage for freshly built `sims` (in feed order), starting now.
    pub fn initial_stage(feed: &Feed, sims: &[MarketSim]) -> Streams {
        Streams::from_simulations(&feed.symbols, sims, crate::clock::wall_us())
    }

    /// Continues `sims` (in feed order) after tick number `ticks`: a restarted cluster engine
    /// rebuilt them from its last snapshot and the steps after it.
    pub fn resume(
        feed: &Feed,
        sims: Vec<MarketSim>,
        ticks: u64,
        journal: Option<Box<dyn Journal>>,
    ) -> Self {
        let now = Instant::now();
        let count = feed.symbols.len();
        let sims = sims
            .into_iter()
            .zip(&feed.symbols)
            .enumerate()
            .map(|(index, (sim, spec))| {
                let period = Duration::from_secs(1) / spec.rate_hz.max(1);
                SimSymbol {
                    sim,
                    period,
                    next_step: now + first_step_offset(index, count, period),
                }
            })
            .collect();
        Simulation {
            sims,
            next_tick: now + TICK_PERIOD,
            ticks,
            step: Step::default(),
            journal,
        }
    }
}

impl Market for Simulation {
    fn advance(&mut self, stage: &mut Stage) -> Option<Instant> {
        let now = Instant::now();
        let now_us = crate::clock::wall_us();
        for index in 0..self.sims.len() {
            let state = &mut self.sims[index];
            if state.next_step > now {
                continue;
            }
            state.next_step += state.period;
            if state.next_step + Duration::from_secs(1) < now {
                // Fell far behind (a stalled machine): skip instead of bursting.
                state.next_step = now + state.period;
            }
            let started = Instant::now();
            state.sim.step(&mut self.step);
            let symbol = index as SymbolId;
            if let Some(journal) = &mut self.journal {
                journal.step(symbol, &self.step, now_us);
            }
            stage.step(symbol, &self.step, now_us);
            stage
                .metrics()
                .step_seconds
                .record(started.elapsed().as_secs_f64());
        }
        if now >= self.next_tick {
            self.next_tick += TICK_PERIOD;
            if self.next_tick < now {
                self.next_tick = now + TICK_PERIOD;
            }
            self.ticks += 1;
            let tick = Tick {
                number: self.ticks,
                now_us,
            };
            stage.tick(tick);
            if let Some(journal) = &mut self.journal {
                let sims: Vec<&MarketSim> = self.sims.iter().map(|s| &s.sim).collect();
                journal.tick(tick, &sims, stage.streams());
            }
        }
        let next_step = self.sims.iter().map(|s| s.next_step).min();
        let due = next_step.map_or(self.next_tick, |step| step.min(self.next_tick));
        Some(due.max(now + STEP_QUANTUM))
    }
}

/// When a symbol first steps, as an offset into its period: symbol `index` of `count` starts
/// `index / count` of the way in.
///
/// The feed's rates divide a second evenly (10 to 100 Hz), so symbols started together would
/// all step at once every 100 ms and every subscriber's frame would be queued in the same
/// instant. The writers then drain the whole burst one socket at a time, and the last
/// subscriber waits for all the others (measured: publish-to-socket p99 5-10 ms at 1,000
/// subscribers on 2 cores). Spread over the period, each batch ([`STEP_QUANTUM`]) wakes only
/// the subscribers of the few symbols it steps. Real venues don't tick in lockstep either.
/// Offsets are fixed per feed, so event contents stay deterministic per seed.
fn first_step_offset(index: usize, count: usize, period: Duration) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(0) % count;
    period / count * index
}
