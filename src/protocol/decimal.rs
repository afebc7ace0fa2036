//! Fixed-point decimals with 8 fractional digits, the only number format on the wire.
//!
//! Binance sends prices and quantities as strings with exactly 8 digits after the point, and
//! clients key their books by that string. Keeping every price as an integer count of 1e-8 units
//! (and every book level as an integer count of ticks) means one price always formats to the same
//! bytes, with no float rounding anywhere between the engine and the socket.

use std::fmt;

/// 10^8: the number of e8 units in one whole unit.
pub const SCALE: u64 = 100_000_000;

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalError(pub String);

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecimalError {}

/// Parses a non-negative decimal such as `"0.01"`, `"42"` or `"65000.5"` into e8 units.
///
/// More than 8 fractional digits, signs, exponents and overflow are errors, never rounded.
pub fn parse_e8(text: &str) -> Result<u64, DecimalError> {
    let err = |why: &str| DecimalError(format!("invalid decimal {text:?}: {why}"));
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err("empty"));
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err("only digits and one '.' are allowed"));
    }
    if frac_part.len() > 8 {
        return Err(err("more than 8 fractional digits"));
    }
    let whole: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| err("too large"))?
    };
    let mut frac: u64 = 0;
    for (i, digit) in frac_part.bytes().enumerate() {
        frac += u64::from(digit - b'0') * 10u64.pow(7 - i as u32);
    }
    whole
        .checked_mul(SCALE)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(|| err("too large"))
}

/// Appends `value` (in e8 units) as a decimal with exactly 8 fractional digits: `4.00000000`.
#[inline]
pub fn push_e8(out: &mut Vec<u8>, value: u64) {
    let mut ints = itoa::Buffer::new();
    out.extend_from_slice(ints.format(value / SCALE).as_bytes());
    let mut frac = value % SCALE;
    let mut digits = [b'0'; 9];
    digits[0] = b'.';
    for slot in digits[1..].iter_mut().rev() {
        *slot = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits);
}

/// [`push_e8`] into a fresh `String`, for tests and cold paths.
pub fn format_e8(value: u64) -> String {
    let mut out = Vec::with_capacity(24);
    push_e8(&mut out, value);
    String::from_utf8(out).expect("digits and '.' are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_exactly() {
        assert_eq!(parse_e8("0.01").unwrap(), 1_000_000);
        assert_eq!(parse_e8("42").unwrap(), 42 * SCALE);
        assert_eq!(parse_e8("0.00000001").unwrap(), 1);
        assert_eq!(parse_e8(".5").unwrap(), SCALE / 2);
        assert_eq!(format_e8(4 * SCALE), "4.00000000");
        assert_eq!(format_e8(120_000), "0.00120000");
        assert_eq!(format_e8(0), "0.00000000");
        assert_eq!(format_e8(6_543_210_987_654_321), "65432109.87654321");
    }

    #[test]
    fn refuses_what_it_cannot_hold_exactly() {
        for bad in [
            "",
            ".",
            "-1",
            "1e5",
            "0.000000001",
            "1.2.3",
            "99999999999999999999",
            " 1",
        ] {
            assert!(parse_e8(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
