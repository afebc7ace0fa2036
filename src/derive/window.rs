//! Depth changes merged over a 100 ms or 1000 ms window: the `<symbol>@depth@100ms` and
//! `<symbol>@depth` (also spelled `@depth@1000ms`) diff streams.
//!
//! A window collects the changed levels of every step that arrives between two timer ticks; a
//! level changed twice keeps only its last lots, exactly as Binance merges its windowed diffs.
//! Draining it yields one `depthUpdate` covering `U = first update id .. u = last update id`.

use crate::market::sim::Step;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Depth changes merged over one window, tick -> final lots per side.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DiffWindow {
    /// Update id of the first step in the window; 0 while the window is empty (real update ids
    /// start at 1, for the initial book, so no step carries 0).
    first_update_id: u64,
    last_update_id: u64,
    bids: HashMap<u64, u64>,
    asks: HashMap<u64, u64>,
}

impl DiffWindow {
    /// Merges one step's changed levels; later lots of a level replace earlier ones.
    pub fn add(&mut self, step: &Step) {
        if self.first_update_id == 0 {
            self.first_update_id = step.update_id;
        }
        self.last_update_id = step.update_id;
        self.bids.extend(step.bids.iter().copied());
        self.asks.extend(step.asks.iter().copied());
    }

    /// Merges a delta that covers update ids `first..=step.update_id` (a gateway's bridge over
    /// steps it could not fetch), so the drained window still starts where the last one ended.
    pub fn add_from(&mut self, first_update_id: u64, step: &Step) {
        if self.first_update_id == 0 {
            self.first_update_id = first_update_id;
        }
        self.add(step);
    }

    /// True when no step arrived since the last drain.
    /// The last update id this window's stream has published, given the stage's last applied
    /// one: everything before the window's first update.
    pub fn published_upto(&self, last_update_id: u64) -> u64 {
        if self.first_update_id == 0 {
            last_update_id
        } else {
            self.first_update_id - 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first_update_id == 0
    }

    /// Moves the window's levels into `out` (as a delta numbered with the last update id, no
    /// trades) sorted best-first, resets the window and returns the first update id. Returns
    /// `None` and leaves `out` alone when the window is empty.
    pub fn drain_into(&mut self, out: &mut Step) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let first = self.first_update_id;
        out.update_id = self.last_update_id;
        out.bids.clear();
        out.asks.clear();
        out.trades.clear();
        out.bids.extend(self.bids.drain());
        out.asks.extend(self.asks.drain());
        out.bids
            .sort_unstable_by_key(|level| std::cmp::Reverse(level.0));
        out.asks.sort_unstable_by_key(|level| level.0);
        self.first_update_id = 0;
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(update_id: u64, bids: &[(u64, u64)], asks: &[(u64, u64)]) -> Step {
        Step {
            update_id,
            bids: bids.to_vec(),
            asks: asks.to_vec(),
            trades: Vec::new(),
        }
    }

    #[test]
    fn merges_steps_keeping_each_levels_last_lots_best_first() {
        let mut window = DiffWindow::default();
        let mut out = Step::default();
        assert!(window.is_empty());
        assert_eq!(window.drain_into(&mut out), None);
        assert_eq!(
            out,
            Step::default(),
            "an empty drain leaves the output alone"
        );

        window.add(&step(2, &[(99, 5), (97, 1)], &[(101, 3)]));
        window.add(&step(3, &[(99, 0), (98, 4)], &[(103, 2), (101, 7)]));
        assert!(!window.is_empty());
        assert_eq!(window.drain_into(&mut out), Some(2));
        assert_eq!(
            out,
            step(3, &[(99, 0), (98, 4), (97, 1)], &[(101, 7), (103, 2)])
        );

        assert!(window.is_empty(), "draining resets the window");
        window.add(&step(4, &[], &[(102, 9)]));
        assert_eq!(window.drain_into(&mut out), Some(4));
        assert_eq!(out, step(4, &[], &[(102, 9)]));
    }
}
