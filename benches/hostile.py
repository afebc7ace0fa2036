#!/usr/bin/env python3
"""Hostile input in a loop, for benches/soak.sh: bad HTTP, bad frames and bad JSON against a
bookcast on loopback, each checked for the documented answer (README "Bad input"), until
DURATION seconds pass. Prints one JSON line: cases sent, answers by kind, mismatches.

usage: hostile.py HOST:PORT DURATION_SECONDS
"""
import base64
import json
import os
import socket
import struct
import sys
import time

ADDR = sys.argv[1].rsplit(":", 1)
HOST, PORT = ADDR[0], int(ADDR[1])
DEADLINE = time.monotonic() + float(sys.argv[2])
TIMEOUT = 5.0


def connect():
    s = socket.create_connection((HOST, PORT), timeout=TIMEOUT)
    return s


def http(raw):
    """Sends raw bytes, returns the status code of the answer (0: closed without one)."""
    with connect() as s:
        s.sendall(raw)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return 0
        parts = data.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def upgrade(path="/ws/btcusdt@depth"):
    s = connect()
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise OSError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise OSError(head.split(b"\r\n")[0].decode(errors="replace"))
    return s


def frame(opcode, payload, fin=True, mask=True, rsv=0):
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Frames:
    """Server frames off a raw socket (servers never mask)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def next(self):
        """(opcode, payload), or None when the connection ends."""
        while True:
            if len(self.buf) >= 2:
                n, at = self.buf[1] & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, at = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
                if n < 126 or at > 2:
                    if len(self.buf) >= at + n:
                        opcode, payload = self.buf[0] & 0x0F, self.buf[at:at + n]
                        self.buf = self.buf[at + n:]
                        return opcode, payload
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk


def close_code(s):
    """Reads frames until the server's close frame; returns its code (0: none)."""
    frames = Frames(s)
    while (f := frames.next()) is not None:
        if f[0] == 8:
            return struct.unpack("!H", f[1][:2])[0] if len(f[1]) >= 2 else 1005
    return 0


def control_error(frames, s, text):
    """Sends one control message; returns the error code of its reply ("closed": none)."""
    s.sendall(frame(1, text.encode()))
    while (f := frames.next()) is not None:
        if f[0] == 1:
            reply = json.loads(f[1])
            return reply.get("error", {}).get("code", "no error")
        if f[0] == 8:
            break
    return "closed"


HTTP_CASES = [
    ("plain GET on a stream path", b"GET /ws/btcusdt@depth HTTP/1.1\r\nHost: x\r\n\r\n", 426),
    ("upgrade without a key", b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\n\r\n", 400),
    ("wrong version", b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
    ("9 KiB header", b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9216 + b"\r\n\r\n", 431),
    ("not HTTP", b"\x16\x03\x01\x00\xa5garbage\r\n\r\n", 400),
    ("bad REST symbol", b"GET /api/v3/depth?symbol=NOPE HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bad REST limit", b"GET /api/v3/depth?symbol=BTCUSDT&limit=abc HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("unknown path", b"GET /wp-login.php HTTP/1.1\r\nHost: x\r\n\r\n", 404),
]

FRAME_CASES = [
    ("binary", frame(2, b"\x00\x01"), 1003),
    ("invalid UTF-8", frame(1, b"\xff\xfe"), 1007),
    ("over 4 KiB", frame(1, b"x" * 5000), 1009),
    ("unmasked", frame(1, b"{}", mask=False), 1002),
    ("RSV bit", frame(1, b"{}", rsv=4), 1002),
    ("fragmented ping", frame(9, b"p", fin=False), 1002),
    ("continuation first", frame(0, b"x"), 1002),
    ("close code 999", frame(8, struct.pack("!H", 999)), 1002),
]

JSON_CASES = [
    ("invalid JSON", '{"method":', 3),
    ("deep nesting", "[" * 1000, 3),
    ("unknown method", '{"method":"DROP","params":[],"id":"h"}', 2),
    ("odd names", '{"method":"SUBSCRIBE","params":["btc\\u0000usdt@depth","%s"],"id":"h"}' % ("é" * 40), 2),
    ("params not an array", '{"method":"SUBSCRIBE","params":"btcusdt@depth","id":"h"}', 2),
]


def main():
    sent, mismatches, answers = 0, [], {}
    while time.monotonic() < DEADLINE:
        for name, raw, want in HTTP_CASES:
            got = http(raw)
            sent += 1
            answers[f"http {got}"] = answers.get(f"http {got}", 0) + 1
            if got != want:
                mismatches.append(f"{name}: HTTP {got}, wanted {want}")
        for name, raw, want in FRAME_CASES:
            with upgrade() as s:
                s.sendall(raw)
                got = close_code(s)
            sent += 1
            answers[f"close {got}"] = answers.get(f"close {got}", 0) + 1
            if got != want:
                mismatches.append(f"{name}: close {got}, wanted {want}")
        with upgrade("/ws") as s:
            frames = Frames(s)
            for name, text, want in JSON_CASES:
                got = control_error(frames, s, text)
                sent += 1
                answers[f"error {got}"] = answers.get(f"error {got}", 0) + 1
                if got != want:
                    mismatches.append(f"{name}: error {got}, wanted {want}")
                # Stay under the 5 messages/s limit: this connection must survive its errors.
                time.sleep(0.25)
        if len(mismatches) > 20:
            break
    print(json.dumps({"sent": sent, "answers": answers, "mismatches": mismatches[:20]}))
    return 1 if mismatches else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:
        print(json.dumps({"sent": 0, "answers": {}, "mismatches": [f"connection failed: {e}"]}))
        sys.exit(1)
