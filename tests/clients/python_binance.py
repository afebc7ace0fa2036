"""python-binance: DepthCacheManager (ws_interval=0, i.e. <s>@depth: 1000 ms, as on Binance) + trade socket.

Strong check: the DepthCacheManager's own last applied update id (_last_update_id) is brought to
exactly a fresh snapshot's lastUpdateId, then its top levels must equal the snapshot's. Resyncs are
counted by wrapping the manager's own _init_cache (the method it calls when U != last+1).

Also reads part of the rest of the catalogue through the library's own calls: a 4h kline socket,
the 1h rolling-window ticker (multiplex_socket), and REST get_klines (4h), get_recent_trades,
get_symbol_ticker_window and get_avg_price.
"""

import asyncio
import logging
from decimal import Decimal

from _bookcheck import (RUN_SECONDS, SYMBOL, CheckFailed, compare_top, deadline, fail, log, ok,
                        port_from_argv, run_check)
from binance import AsyncClient, BinanceSocketManager, DepthCacheManager

MIN_TRADES = 5
HOUR_MS = 3_600_000


async def check_catalogue(client, bm):
    """The newer streams and REST rows, through python-binance's own calls; returns a summary."""
    async with bm.kline_socket(SYMBOL, interval=AsyncClient.KLINE_INTERVAL_4HOUR) as ks:
        msg = await asyncio.wait_for(ks.recv(), 10)
    k = msg.get("k", {})
    if msg.get("e") != "kline" or k.get("i") != "4h" or k["T"] - k["t"] + 1 != 4 * HOUR_MS:
        raise CheckFailed("bad 4h kline event %r" % msg)
    if k["t"] % (4 * HOUR_MS):
        raise CheckFailed("4h kline not aligned: %r" % k)

    stream = "%s@ticker_1h" % SYMBOL.lower()
    async with bm.multiplex_socket([stream]) as ms:
        msg = await asyncio.wait_for(ms.recv(), 10)
    data = msg.get("data", {})
    fields = ["e", "E", "s", "p", "P", "o", "h", "l", "c", "w", "v", "q", "O", "C", "F", "L", "n"]
    if msg.get("stream") != stream or data.get("e") != "1hTicker" or list(data) != fields:
        raise CheckFailed("bad rolling-window ticker event %r" % msg)

    rows = await client.get_klines(symbol=SYMBOL, interval=AsyncClient.KLINE_INTERVAL_4HOUR, limit=5)
    if not rows or any(len(r) != 12 or r[6] - r[0] + 1 != 4 * HOUR_MS for r in rows):
        raise CheckFailed("bad get_klines(4h) answer %r" % rows)

    trades = await client.get_recent_trades(symbol=SYMBOL, limit=10)
    ids = [t["id"] for t in trades]
    if not 0 < len(trades) <= 10 or ids != sorted(ids) or any(Decimal(t["price"]) <= 0 for t in trades):
        raise CheckFailed("bad get_recent_trades answer %r" % trades)

    window = await client.get_symbol_ticker_window(symbol=SYMBOL, windowSize="1h")
    if window.get("symbol") != SYMBOL or window["closeTime"] - window["openTime"] < HOUR_MS:
        raise CheckFailed("bad get_symbol_ticker_window answer %r" % window)
    avg = await client.get_avg_price(symbol=SYMBOL)
    if avg.get("mins") != 5 or Decimal(avg["price"]) <= 0:
        raise CheckFailed("bad get_avg_price answer %r" % avg)
    return "4h kline socket, @ticker_1h, get_klines(4h) x%d, get_recent_trades x%d, ticker window, avgPrice" % (
        len(rows), len(trades))


def check_trade(msg, last_t):
    if msg.get("e") == "error":
        raise CheckFailed("trade socket error: %r" % msg)
    for k in ("e", "E", "s", "t", "p", "q", "T", "m", "M"):
        if k not in msg:
            raise CheckFailed("trade event lacks %r: %r" % (k, msg))
    if msg["e"] != "trade" or msg["s"] != SYMBOL:
        raise CheckFailed("unexpected trade event %r" % msg)
    if not isinstance(msg["t"], int) or (last_t is not None and msg["t"] <= last_t):
        raise CheckFailed("trade ids not increasing: %r after %r" % (msg["t"], last_t))
    if Decimal(msg["p"]) <= 0 or Decimal(msg["q"]) <= 0 or not isinstance(msg["m"], bool):
        raise CheckFailed("bad trade fields %r" % msg)
    return msg["t"]


async def main(port):
    class Local(AsyncClient):
        API_URL = "http://127.0.0.1:%d/api" % port

    client = await Local.create()  # calls /api/v3/ping and /api/v3/time
    try:
        bm = BinanceSocketManager(client)
        bm.STREAM_URL = "ws://127.0.0.1:%d/" % port

        trades = []

        async def trade_task():
            last_t = None
            async with bm.trade_socket(SYMBOL) as ts:
                while len(trades) < MIN_TRADES:
                    msg = await asyncio.wait_for(ts.recv(), 10)
                    last_t = check_trade(msg, last_t)
                    trades.append(msg)

        trade_fut = asyncio.ensure_future(trade_task())

        dcm = DepthCacheManager(client, SYMBOL, bm=bm, limit=1000, ws_interval=0)
        inits = [0]
        late_inits = [0]  # re-fetches after the first event was applied: real gaps
        orig_init = dcm._init_cache

        async def counting_init():
            inits[0] += 1
            if updates_box[0] > 0:
                late_inits[0] += 1
            await orig_init()

        dcm._init_cache = counting_init  # instrumentation only: the library's code runs unchanged

        async def recv():
            res = await asyncio.wait_for(dcm.recv(), 10)
            if isinstance(res, dict):  # the manager returns the error message on socket errors
                raise CheckFailed("depth cache error: %r" % res)
            return res

        updates = 0
        updates_box = [0]
        async with dcm:
            done = deadline(RUN_SECONDS)
            while not done():
                dc = await recv()
                updates += 1
                updates_box[0] = updates
                b, a = dc.get_bids(), dc.get_asks()
                if b and a and b[0][0] >= a[0][0]:
                    raise CheckFailed("crossed book during run: %s >= %s" % (b[0][0], a[0][0]))
            log("ran %.0fs: %d depth events applied, last update id %s, %d snapshot fetches"
                % (RUN_SECONDS, updates, dcm._last_update_id, inits[0]))

            # Align: bring the library's book to exactly a snapshot's lastUpdateId.
            for attempt in range(10):
                snap = await client.get_order_book(symbol=SYMBOL, limit=1000)
                target = snap["lastUpdateId"]
                while dcm._last_update_id < target:
                    dc = await recv()
                if dcm._last_update_id == target:
                    summary = compare_top(dc.get_bids(), dc.get_asks(), snap)
                    break
                log("attempt %d: library at %s passed snapshot %s, retrying"
                    % (attempt, dcm._last_update_id, target))
            else:
                raise CheckFailed("could not align library update id with a snapshot")

        resyncs = inits[0] - 1
        await asyncio.wait_for(trade_fut, 10)
        catalogue = await check_catalogue(client, bm)
        # The manager fetches its snapshot before it connects, so the first event after it may
        # legitimately trigger one re-fetch at start; a re-fetch after that means a sequence gap.
        if late_inits[0]:
            raise CheckFailed("%d resyncs (sequence gaps) after the first applied event" % late_inits[0])
        return "%s at update id %d; %d events, %d start-up resync(s); %d trades via trade_socket; %s" % (
            summary, target, updates, resyncs, len(trades), catalogue)
    finally:
        await client.close_connection()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    port = port_from_argv()
    run_check(lambda: asyncio.run(main(port)))
