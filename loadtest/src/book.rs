//! A client's local order book, kept from a snapshot (in-band `depthSnapshot` or REST) and the
//! diffs after it, and its comparison with a REST snapshot at the same update id: the proof
//! that what a client built from the stream is what the server holds.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;

/// One side's levels as they travel: `[["price","qty"],..]`.
pub type Levels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The level arrays of a depth event (`b`/`a` of a diff, `bids`/`asks` of a snapshot), parsed
/// only in the book modes: the plain run skips them.
#[derive(Deserialize, Default)]
pub struct DepthLevels<'a> {
    #[serde(borrow, default)]
    pub b: Option<Levels<'a>>,
    #[serde(borrow, default)]
    pub a: Option<Levels<'a>>,
    #[serde(borrow, default)]
    pub bids: Option<Levels<'a>>,
    #[serde(borrow, default)]
    pub asks: Option<Levels<'a>>,
}

#[derive(Deserialize)]
pub struct CombinedLevels<'a> {
    #[serde(borrow)]
    pub data: Option<DepthLevels<'a>>,
}

/// `/api/v3/depth`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestSnapshot {
    pub last_update_id: u64,
    pub bids: Vec<(String, String)>,
    pub asks: Vec<(String, String)>,
}

/// Levels keyed by their price string: SPEC.md promises one price is always the same string,
/// and Binance clients (python-binance's DepthCache) key their books the same way.
#[derive(Default, Debug, Clone)]
pub struct Book {
    /// The last update id applied.
    pub u: u64,
    bids: HashMap<String, String>,
    asks: HashMap<String, String>,
}

/// A removed level's quantity: "0.00000000" on bookcast and Binance, accepted in any
/// zero spelling.
fn is_zero(qty: &str) -> bool {
    !qty.is_empty() && qty.bytes().all(|c| c == b'0' || c == b'.')
}

fn apply_side<P: AsRef<str>, Q: AsRef<str>>(side: &mut HashMap<String, String>, levels: &[(P, Q)]) {
    for (price, qty) in levels {
        let (price, qty) = (price.as_ref(), qty.as_ref());
        if is_zero(qty) {
            side.remove(price);
        } else {
            side.insert(price.to_string(), qty.to_string());
        }
    }
}

impl Book {
    /// A book at `last_update_id` holding these levels.
    pub fn from_snapshot<P: AsRef<str>, Q: AsRef<str>>(
        last_update_id: u64,
        bids: &[(P, Q)],
        asks: &[(P, Q)],
    ) -> Self {
        let mut book = Book {
            u: last_update_id,
            ..Book::default()
        };
        apply_side(&mut book.bids, bids);
        apply_side(&mut book.asks, asks);
        book
    }

    pub fn from_rest(rest: &RestSnapshot) -> Self {
        Book::from_snapshot(rest.last_update_id, &rest.bids, &rest.asks)
    }

    /// Applies a diff whose last update id is `u` (the caller has checked the sequence).
    pub fn apply<P: AsRef<str>, Q: AsRef<str>>(
        &mut self,
        u: u64,
        bids: &[(P, Q)],
        asks: &[(P, Q)],
    ) {
        apply_side(&mut self.bids, bids);
        apply_side(&mut self.asks, asks);
        self.u = u;
    }

    /// Levels a side holds, the larger of the two: the REST `limit` must exceed it for a
    /// level the server has and the client lacks to show up.
    pub fn deepest_side(&self) -> usize {
        self.bids.len().max(self.asks.len())
    }

    /// Compares with a REST snapshot taken at the same update id. A side the server cut at
    /// `limit` is compared over the best `limit` levels only. `Err` describes the first
    /// difference (for the report's examples).
    pub fn compare(&self, rest: &RestSnapshot, limit: usize) -> Result<(), String> {
        if rest.last_update_id != self.u {
            return Err(format!(
                "compared at different ids: book {} REST {}",
                self.u, rest.last_update_id
            ));
        }
        compare_side("bid", &self.bids, &rest.bids, limit, true)?;
        compare_side("ask", &self.asks, &rest.asks, limit, false)
    }
}

fn compare_side(
    name: &str,
    local: &HashMap<String, String>,
    rest: &[(String, String)],
    limit: usize,
    descending: bool,
) -> Result<(), String> {
    let truncated = rest.len() >= limit;
    if !truncated {
        if local.len() != rest.len() {
            return Err(format!(
                "{name}s: book has {} levels, REST {}",
                local.len(),
                rest.len()
            ));
        }
        for (price, qty) in rest {
            match local.get(price) {
                Some(mine) if mine == qty => {}
                Some(mine) => return Err(format!("{name} {price}: book {mine}, REST {qty}")),
                None => {
                    return Err(format!(
                        "{name} {price}: missing from the book (REST {qty})"
                    ))
                }
            }
        }
        return Ok(());
    }
    // The server sent its best `limit` levels: the book's best `limit` must be the same.
    let mut best: Vec<(f64, &String, &String)> = Vec::with_capacity(local.len());
    for (price, qty) in local {
        let value: f64 = price
            .parse()
            .map_err(|_| format!("{name} price {price:?} is not a number"))?;
        best.push((value, price, qty));
    }
    best.sort_by(|x, y| {
        let order = x.0.total_cmp(&y.0);
        if descending {
            order.reverse()
        } else {
            order
        }
    });
    for (i, (price, qty)) in rest.iter().enumerate() {
        match best.get(i) {
            Some((_, p, q)) if *p == price && *q == qty => {}
            Some((_, p, q)) => {
                return Err(format!(
                    "{name} level {i}: book {p} {q}, REST {price} {qty}"
                ))
            }
            None => return Err(format!("{name} level {i}: missing from the book")),
        }
    }
    Ok(())
}

/// The REST `limit` that shows any level the server holds beyond the book's: the smallest of
/// Binance's weight tiers (100, 500, 1000, 5000) above the book's deepest side.
pub fn rest_limit(book: &Book) -> usize {
    let need = book.deepest_side() + 1;
    [100, 500, 1000, 5000]
        .into_iter()
        .find(|&tier| tier >= need)
        .unwrap_or(5000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(pairs: &[(&'static str, &'static str)]) -> Levels<'static> {
        pairs
            .iter()
            .map(|(p, q)| (Cow::Borrowed(*p), Cow::Borrowed(*q)))
            .collect()
    }

    fn rest(id: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> RestSnapshot {
        let own = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(p, q)| (p.to_string(), q.to_string()))
                .collect()
        };
        RestSnapshot {
            last_update_id: id,
            bids: own(bids),
            asks: own(asks),
        }
    }

    #[test]
    fn diffs_update_and_remove_levels() {
        let mut book = Book::from_snapshot(
            10,
            &levels(&[("2.00000000", "1.00000000"), ("1.00000000", "3.00000000")]),
            &levels(&[("3.00000000", "1.00000000")]),
        );
        book.apply(
            12,
            &levels(&[("2.00000000", "0.00000000"), ("1.50000000", "2.00000000")]),
            &levels(&[("3.00000000", "5.00000000")]),
        );
        assert_eq!(book.u, 12);
        let server = rest(
            12,
            &[("1.50000000", "2.00000000"), ("1.00000000", "3.00000000")],
            &[("3.00000000", "5.00000000")],
        );
        assert_eq!(book.compare(&server, 100), Ok(()));
        let other = rest(
            12,
            &[("1.50000000", "2.00000000")],
            &[("3.00000000", "5.00000000")],
        );
        assert!(book
            .compare(&other, 100)
            .unwrap_err()
            .contains("bids: book has 2"));
        let wrong_qty = rest(
            12,
            &[("1.50000000", "2.00000000"), ("1.00000000", "4.00000000")],
            &[("3.00000000", "5.00000000")],
        );
        assert!(book
            .compare(&wrong_qty, 100)
            .unwrap_err()
            .contains("bid 1.00000000"));
        assert!(book.compare(&rest(13, &[], &[]), 100).is_err());
    }

    #[test]
    fn a_truncated_rest_side_compares_the_best_levels() {
        let book = Book::from_snapshot(
            1,
            &levels(&[("9.0", "1"), ("10.0", "1"), ("8.0", "1")]),
            &levels(&[("11.0", "1"), ("12.0", "1"), ("13.0", "1")]),
        );
        let server = rest(
            1,
            &[("10.0", "1"), ("9.0", "1")],
            &[("11.0", "1"), ("12.0", "1")],
        );
        assert_eq!(book.compare(&server, 2), Ok(()));
        let worse = rest(
            1,
            &[("10.0", "1"), ("8.0", "1")],
            &[("11.0", "1"), ("12.0", "1")],
        );
        assert!(book.compare(&worse, 2).is_err());
        assert_eq!(rest_limit(&book), 100);
    }
}
