"""python-binance: DepthCacheManager (ws_interval=0, i.e. <s>@depth: 1000 ms, as on Binance) + trade socket.

Strong check: the DepthCacheManager's own last applied update id (_last_update_id) is brought to
exactly a fresh snapshot's lastUpdateId, then its top levels must equal the snapshot's. Resyncs are
counted by wrapping the manager's own _init_cache (the method it calls when U != last+1).
"""

import asyncio
import logging
from decimal import Decimal

from _bookcheck import (RUN_SECONDS, SYMBOL, CheckFailed, compare_top, deadline, fail, log, ok,
                        port_from_argv, run_check)
from binance import AsyncClient, BinanceSocketManager, DepthCacheManager

MIN_TRADES = 5


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
        # The manager fetches its snapshot before it connects, so the first event after it may
        # legitimately trigger one re-fetch at start; a re-fetch after that means a sequence gap.
        if late_inits[0]:
            raise CheckFailed("%d resyncs (sequence gaps) after the first applied event" % late_inits[0])
        return "%s at update id %d; %d events, %d start-up resync(s); %d trades via trade_socket" % (
            summary, target, updates, resyncs, len(trades))
    finally:
        await client.close_connection()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    port = port_from_argv()
    run_check(lambda: asyncio.run(main(port)))
