//! Tiny append-only JSON writers for the hot path.
//!
//! Every event is rendered straight into a byte buffer that later becomes a shared WebSocket
//! frame; going through serde would allocate per field and cost a dynamic dispatch per value for
//! payloads whose shape is fixed. Only bookcast's own strings (symbols, stream names, fixed
//! field names) are written unescaped; anything a peer sent goes through [`push_escaped_str`].

use crate::protocol::decimal::push_e8;

/// The unit of the time fields (`E`, `T`, kline `t`/`T`) a connection asked for with `timeUnit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TimeUnit {
    #[default]
    Millisecond,
    Microsecond,
}

impl TimeUnit {
    /// Parses the `timeUnit` query value the way Binance does (upper or lower case only).
    pub fn parse(value: &str) -> Option<TimeUnit> {
        match value {
            "MILLISECOND" | "millisecond" => Some(TimeUnit::Millisecond),
            "MICROSECOND" | "microsecond" => Some(TimeUnit::Microsecond),
            _ => None,
        }
    }

    /// Converts a microsecond timestamp into this unit.
    #[inline]
    pub fn from_micros(self, micros: u64) -> u64 {
        match self {
            TimeUnit::Millisecond => micros / 1000,
            TimeUnit::Microsecond => micros,
        }
    }
}

/// Appends an unsigned integer.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends a signed integer.
#[inline]
pub fn push_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends an e8 fixed-point value as a quoted 8-digit decimal string: `"4.00000000"`.
#[inline]
pub fn push_e8_str(out: &mut Vec<u8>, value: u64) {
    out.push(b'"');
    push_e8(out, value);
    out.push(b'"');
}

/// Appends a signed e8 value as a quoted decimal string: `"-0.50000000"`.
#[inline]
pub fn push_signed_e8_str(out: &mut Vec<u8>, value: i64) {
    out.push(b'"');
    if value < 0 {
        out.push(b'-');
    }
    push_e8(out, value.unsigned_abs());
    out.push(b'"');
}

/// Appends a time field converted from microseconds into `unit`.
#[inline]
pub fn push_time(out: &mut Vec<u8>, micros: u64, unit: TimeUnit) {
    push_u64(out, unit.from_micros(micros));
}

/// Appends the head every Binance event shares, `{"e":"<event>","E":<time>,"s":"<SYMBOL>"`; the
/// caller continues with `,"<field>":...` and closes the object.
#[inline]
pub fn push_event_head(
    out: &mut Vec<u8>,
    event: &str,
    event_us: u64,
    unit: TimeUnit,
    symbol: &str,
) {
    out.extend_from_slice(b"{\"e\":\"");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\",\"E\":");
    push_time(out, event_us, unit);
    out.extend_from_slice(b",\"s\":\"");
    out.extend_from_slice(symbol.as_bytes());
    out.push(b'"');
}

/// Appends the tail of `trade`/`aggTrade`: `,"m":<buyer is maker>,"M":true}`.
#[inline]
pub fn push_maker_tail(out: &mut Vec<u8>, buyer_is_maker: bool) {
    out.extend_from_slice(if buyer_is_maker {
        b",\"m\":true,\"M\":true}"
    } else {
        b",\"m\":false,\"M\":true}"
    });
}

/// Appends `value` as a JSON string, escaping what RFC 8259 requires.
pub fn push_escaped_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for &byte in value.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// Appends a JSON array: `[`, `each` item separated by commas, `]`.
pub fn push_array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (n, item) in items.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

/// Appends `[["price","qty"],...]` for book levels given as (price e8, qty e8).
pub fn push_levels(out: &mut Vec<u8>, levels: impl Iterator<Item = (u64, u64)>) {
    push_array(out, levels, |out, (price, qty)| {
        out.push(b'[');
        push_e8_str(out, price);
        out.push(b',');
        push_e8_str(out, qty);
        out.push(b']');
    });
}

/// Nesting depth of JSON text, ignoring brackets inside strings: control messages and WebSocket
/// API requests refuse hostile nesting before parsing.
pub fn nesting_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The unsigned number right after the first `key` (e.g. `"u":`) in `text`: for reading an id
/// back out of one of bookcast's own payloads, where each such key appears once.
pub fn find_u64_field(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_binance_number_shapes() {
        assert_eq!(render(|o| push_e8_str(o, 400_000_000)), "\"4.00000000\"");
        assert_eq!(
            render(|o| push_signed_e8_str(o, -50_000_000)),
            "\"-0.50000000\""
        );
        assert_eq!(
            render(|o| push_time(o, 1_700_000_000_123_456, TimeUnit::Millisecond)),
            "1700000000123"
        );
        assert_eq!(
            render(|o| push_time(o, 1_700_000_000_123_456, TimeUnit::Microsecond)),
            "1700000000123456"
        );
        assert_eq!(
            render(|o| push_levels(o, [(100_000_000, 0), (200_000_000, 5)].into_iter())),
            r#"[["1.00000000","0.00000000"],["2.00000000","0.00000005"]]"#
        );
    }

    #[test]
    fn escapes_peer_strings() {
        assert_eq!(
            render(|o| push_escaped_str(o, "a\"b\\c\n\u{1}")),
            r#""a\"b\\c\n\u0001""#
        );
    }
}
