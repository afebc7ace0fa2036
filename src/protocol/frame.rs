//! Server-to-client WebSocket frames, built once and shared.
//!
//! Server frames are unmasked (RFC 6455 §5.1), so a frame's bytes are identical for every
//! subscriber: the hub renders header + payload into one buffer and every outbox holds a
//! refcounted [`Bytes`] of it. Writers then hand those buffers to `writev` untouched.

use bytes::Bytes;

/// Room left in front of a payload for the largest header a server frame can need (2 + 8 bytes).
pub const HEADROOM: usize = 10;

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const FIN: u8 = 0x80;

/// A buffer to render one text frame into: payload bytes are appended after [`HEADROOM`].
pub fn text_buffer(payload_hint: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADROOM + payload_hint);
    buf.resize(HEADROOM, 0);
    buf
}

/// Turns a buffer from [`text_buffer`] (payload appended) into a finished text frame.
pub fn finish_text(buf: Vec<u8>) -> Bytes {
    finish(buf, OP_TEXT)
}

fn finish(mut buf: Vec<u8>, opcode: u8) -> Bytes {
    debug_assert!(buf.len() >= HEADROOM);
    let len = buf.len() - HEADROOM;
    let mut header = [0u8; HEADROOM];
    header[0] = FIN | opcode;
    let header_len = if len < 126 {
        header[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        header[1] = 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    let start = HEADROOM - header_len;
    buf[start..HEADROOM].copy_from_slice(&header[..header_len]);
    Bytes::from(buf).slice(start..)
}

/// The payload of a text frame built here (an unmasked server frame), `None` for any other
/// frame: for transports that carry the same payloads without WebSocket framing.
pub fn text_payload(frame: &[u8]) -> Option<&[u8]> {
    let (&first, &second) = (frame.first()?, frame.get(1)?);
    if first != FIN | OP_TEXT {
        return None;
    }
    let header_len = match second {
        126 => 4,
        127 => 10,
        len if len < 126 => 2,
        _ => return None,
    };
    frame.get(header_len..)
}

/// A complete text frame holding `payload`.
pub fn text(payload: &[u8]) -> Bytes {
    let mut buf = text_buffer(payload.len());
    buf.extend_from_slice(payload);
    finish_text(buf)
}

/// A complete binary frame holding `payload` (only the conformance echo route sends these).
pub fn binary(payload: &[u8]) -> Bytes {
    let mut buf = text_buffer(payload.len());
    buf.extend_from_slice(payload);
    finish(buf, OP_BINARY)
}

/// A close frame with `code` and a reason (cut to fit the 125-byte control-frame limit).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut buf = text_buffer(2 + cut);
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(&reason.as_bytes()[..cut]);
    finish(buf, OP_CLOSE)
}

/// How every WebSocket connection is closed when the server shuts down (after
/// [`server_shutdown`]).
pub const SHUTDOWN_CODE: u16 = 1001;
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// The `serverShutdown` event as a text frame, in the connection's format: wrapped as a
/// combined stream event or bare, its time in ms or µs. Sent last before the 1001 close.
pub fn server_shutdown(combined: bool, unit: crate::protocol::json::TimeUnit) -> Bytes {
    let mut payload = Vec::with_capacity(96);
    if combined {
        payload.extend_from_slice(b"{\"stream\":\"!serverShutdown\",\"data\":");
    }
    payload.extend_from_slice(b"{\"e\":\"serverShutdown\",\"E\":");
    crate::protocol::json::push_time(&mut payload, crate::clock::wall_us(), unit);
    payload.push(b'}');
    if combined {
        payload.push(b'}');
    }
    text(&payload)
}

/// The server's ping: empty payload, so one static frame serves every connection and every
/// interval without an allocation.
pub const PING: &[u8] = &[FIN | OP_PING, 0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc6455_length_forms() {
        let small = text(b"hi");
        assert_eq!(&small[..], b"\x81\x02hi");
        assert_eq!(PING, b"\x89\x00", "an empty ping frame");
        let medium = text(&[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 304);
        let large = text(&vec![b'y'; 70_000]);
        assert_eq!(large[1], 127);
        assert_eq!(u64::from_be_bytes(large[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn close_frames_carry_code_and_a_bounded_reason() {
        let frame = close(4008, "slow consumer");
        assert_eq!(frame[0], 0x88);
        assert_eq!(usize::from(frame[1]), 2 + "slow consumer".len());
        assert_eq!(&frame[2..4], &4008u16.to_be_bytes());
        let long = close(1001, &"é".repeat(100));
        assert!(long.len() - 2 <= 125);
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }
}
