"""cryptofeed: its Binance feed (combined /stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/
btcusdt@bookTicker, /api/v3/exchangeInfo for symbols, /api/v3/depth for the snapshot) keeping
its own L2 book; we only read the book it hands to the L2_BOOK callback.

Strong check: the callback's book carries sequence_number = the u of the last window cryptofeed
applied; right after a callback we fetch a snapshot and, when its lastUpdateId equals that
sequence number, compare top levels. cryptofeed's own cross_check is on (it raises on a crossed
book), and its "Missing book update detected, resetting book" warnings are counted as resyncs.

cryptofeed 2.4.1 refuses any WebSocket address that is not wss:// (cryptofeed/connection.py,
WSAsyncConn.__init__). So run.sh starts a second bookcast with --tls-cert/--tls-key (a throwaway
self-signed certificate for localhost/127.0.0.1) and passes this script that server's port and
the certificate. Everything goes to that server over TLS, verified against the certificate:
  - the WebSocket: wss://127.0.0.1:<port>, with an ssl context trusting the certificate passed
    through WebsocketEndpoint options (cryptofeed hands them to websockets.connect);
  - cryptofeed's depth snapshot (aiohttp): the same context, on the feed's HTTP session;
  - cryptofeed's exchangeInfo (a bare requests.get, no way to pass a context): REQUESTS_CA_BUNDLE;
  - this script's own aligned-check snapshots (urllib): the same context.

usage: cryptofeed_book.py TLS_PORT CERT_PEM
"""

import asyncio
import logging
import os
import ssl
import sys
import time

import aiohttp
from _bookcheck import (RUN_SECONDS, TOP, CheckFailed, compare_top, fail, log, ok, port_from_argv, run_check,
                        rest_snapshot)
from cryptofeed import FeedHandler
from cryptofeed.connection import HTTPAsyncConn, RestEndpoint, Routes, WebsocketEndpoint
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


class TLSHTTPAsyncConn(HTTPAsyncConn):
    """cryptofeed's HTTP connection, with a session whose connector verifies with ssl_ctx.

    HTTPAsyncConn._open makes a bare aiohttp.ClientSession(); this only adds the connector.
    """

    def __init__(self, conn_id, ssl_ctx, proxy=None):
        super().__init__(conn_id, proxy)
        self.ssl_ctx = ssl_ctx

    async def _open(self):
        if not self.is_open:
            self.conn = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl_ctx))
            self.sent = 0
            self.received = 0
            self.last_message = None


def run(port, cert):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client_ctx = ssl.create_default_context(cafile=cert)
    # cryptofeed reads exchangeInfo with requests.get(address) and nothing else; requests then
    # verifies against REQUESTS_CA_BUNDLE (this process only talks to the local server).
    os.environ["REQUESTS_CA_BUNDLE"] = cert

    class LocalBinance(Binance):
        websocket_endpoints = [WebsocketEndpoint("wss://127.0.0.1:%d" % port, options={"ssl": client_ctx})]
        rest_endpoints = [RestEndpoint("https://127.0.0.1:%d" % port, routes=Routes(
            "/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}"))]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.http_conn = TLSHTTPAsyncConn(self.id, client_ctx, self.http_proxy)

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
        snap = rest_snapshot(port, 1000, context=client_ctx)
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
    if len(sys.argv) < 3 or not os.path.isfile(sys.argv[2]):
        fail("usage: %s TLS_PORT CERT_PEM (a bookcast started with --tls-cert CERT_PEM)" % sys.argv[0])
    run_check(lambda: run(port, sys.argv[2]))
