"""cryptofeed: its Binance feed (combined /stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/
btcusdt@bookTicker, /api/v3/exchangeInfo for symbols, /api/v3/depth for the snapshot) keeping
its own L2 book; we only read the book it hands to the L2_BOOK callback.

Strong check: the callback's book carries sequence_number = the u of the last window cryptofeed
applied; right after a callback we fetch a snapshot and, when its lastUpdateId equals that
sequence number, compare top levels. cryptofeed's own cross_check is on (it raises on a crossed
book), and its "Missing book update detected, resetting book" warnings are counted as resyncs.

cryptofeed 2.4.1 refuses any WebSocket address that is not wss:// (cryptofeed/connection.py,
WSAsyncConn.__init__), and bookcast serves plain ws only. So this script puts a TLS-terminating
byte pipe (self-signed certificate made with the openssl CLI) in front of bookcast and gives
cryptofeed wss://127.0.0.1:<pipe>, passing an ssl context that trusts the certificate through
WebsocketEndpoint options (which cryptofeed hands to websockets.connect). Everything cryptofeed
does is then byte-for-byte what it does against Binance. REST stays plain http.
"""

import asyncio
import logging
import os
import ssl
import subprocess
import tempfile
import time

from _bookcheck import (RUN_SECONDS, TOP, CheckFailed, compare_top, fail, log, ok, port_from_argv,
                        rest_snapshot)
from cryptofeed import FeedHandler
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import L2_BOOK, TICKER, TRADES
from cryptofeed.exchanges import Binance


class Counter(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.resets = 0
        self.errors = []

    def emit(self, record):
        msg = record.getMessage()
        if "Missing book update" in msg:
            self.resets += 1
        elif record.levelno >= logging.ERROR:
            self.errors.append(msg)


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


async def start_tls_pipe(cert, key, port):
    """wss -> ws: terminate TLS, copy bytes both ways to bookcast's port."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def copy(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(copy(client_r, up_w), copy(up_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    return server, server.sockets[0].getsockname()[1]


def main(port):
    with tempfile.TemporaryDirectory() as tmp:
        return run(port, *make_cert(tmp))


def run(port, cert, key):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pipe, tls_port = loop.run_until_complete(start_tls_pipe(cert, key, port))
    client_ctx = ssl.create_default_context(cafile=cert)

    class LocalBinance(Binance):
        websocket_endpoints = [WebsocketEndpoint("wss://127.0.0.1:%d" % tls_port, options={"ssl": client_ctx})]
        rest_endpoints = [RestEndpoint("http://127.0.0.1:%d" % port, routes=Routes(
            "/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}"))]

    counter = Counter()
    logging.getLogger("feedhandler").addHandler(counter)

    result = loop.create_future()
    state = {"books": 0, "snapshots": 0, "trades": 0, "tickers": 0, "tries": 0, "start": None}

    def finish(value):
        if not result.done():
            result.set_result(value)

    async def on_book(book, receipt_ts):
        state["books"] += 1
        if book.delta is None:
            state["snapshots"] += 1
        if state["start"] is None:
            state["start"] = time.monotonic()
        if time.monotonic() - state["start"] < RUN_SECONDS or result.done():
            return
        # Right after cryptofeed applied a window: a snapshot with lastUpdateId equal to
        # the window's u describes exactly this state.
        state["tries"] += 1
        snap = rest_snapshot(port, 1000)
        if snap["lastUpdateId"] == book.sequence_number:
            bids = [book.book.bids.index(i) for i in range(min(TOP, len(book.book.bids)))]
            asks = [book.book.asks.index(i) for i in range(min(TOP, len(book.book.asks)))]
            try:
                finish(("ok", compare_top(bids, asks, snap), book.sequence_number))
            except CheckFailed as e:
                finish(("fail", str(e), book.sequence_number))
        elif state["tries"] >= 100:
            finish(("fail", "no snapshot lined up with cryptofeed's sequence number in 100 tries", None))

    async def on_trade(t, receipt_ts):
        state["trades"] += 1

    async def on_ticker(t, receipt_ts):
        state["tickers"] += 1
        if t.bid >= t.ask:
            finish(("fail", "bookTicker crossed: %s >= %s" % (t.bid, t.ask), None))

    fh = FeedHandler(config={"log": {"disabled": True}, "uvloop": False})
    fh.add_feed(LocalBinance(symbols=["BTC-USDT"], channels=[L2_BOOK, TRADES, TICKER],
                             callbacks={L2_BOOK: on_book, TRADES: on_trade, TICKER: on_ticker},
                             cross_check=True))
    fh.run(start_loop=False, install_signal_handlers=False)
    try:
        status, text, seq = loop.run_until_complete(asyncio.wait_for(result, RUN_SECONDS + 30))
    except asyncio.TimeoutError:
        raise CheckFailed("timed out; %d book callbacks, log errors: %s" % (state["books"], counter.errors[:3]))
    finally:
        fh.stop(loop=loop)
        pipe.close()
    if status != "ok":
        raise CheckFailed(text)
    if counter.resets or state["snapshots"] != 1:
        raise CheckFailed("%d resyncs, %d snapshots" % (counter.resets, state["snapshots"]))
    if counter.errors:
        raise CheckFailed("cryptofeed logged errors: %s" % counter.errors[:3])
    if not state["trades"] or not state["tickers"]:
        raise CheckFailed("no aggTrade (%d) or bookTicker (%d) callbacks" % (state["trades"], state["tickers"]))
    return ("%s at sequence %d (aligned after %d tries); %d book callbacks from 1 snapshot, 0 resyncs; "
            "%d trades, %d tickers" % (text, seq, state["tries"], state["books"], state["trades"], state["tickers"]))


if __name__ == "__main__":
    port = port_from_argv()
    try:
        ok(main(port))
    except CheckFailed as e:
        fail(str(e))
    except Exception as e:
        fail("%s: %s" % (type(e).__name__, e))
