"""ccxt (pro): load_markets (GET /api/v3/exchangeInfo via fetchMarkets, spot only), fetch_order_book
(GET /api/v3/depth), and watch_order_book: ccxt connects to /ws/<n>, SUBSCRIBEs
<s>@depth@100ms with an integer id, and on the {"result":null,"id":n} reply fetches the snapshot
and keeps its own book, raising ChecksumError on any sequence gap.

Strong check: ccxt's book carries nonce = the u of the last window it applied; right after
watch_order_book returns we fetch a snapshot without yielding to the event loop (so ccxt cannot
apply another window meanwhile) and, when its lastUpdateId equals the nonce, compare top levels.
Snapshot fetches are counted by wrapping ccxt's own fetch_rest_order_book_safe (more than one
means it resynced).
"""

import asyncio
from decimal import Decimal

import ccxt.pro as ccxtpro
from _bookcheck import (RUN_SECONDS, CheckFailed, compare_top, deadline, log, ok, fail,
                        port_from_argv, run_check, rest_snapshot)

SYMBOL = "BTC/USDT"


async def main(port):
    ex = ccxtpro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    ex.urls["api"]["ws"]["spot"] = "ws://127.0.0.1:%d/ws" % port
    ex.urls["api"]["public"] = "http://127.0.0.1:%d/api/v3" % port
    try:
        return await run(ex, port)
    finally:
        await ex.close()


async def run(ex, port):
    markets = await ex.load_markets()
    m = markets.get(SYMBOL)
    if not m or m["id"] != "BTCUSDT" or not m["spot"] or not m["active"]:
        raise CheckFailed("load_markets: %s missing or wrong: %r" % (SYMBOL, m and {k: m[k] for k in ("id", "spot", "active")}))
    if Decimal(str(m["precision"]["price"])) != Decimal("0.01") or Decimal(str(m["precision"]["amount"])) != Decimal("0.00001"):
        raise CheckFailed("market precision %r (feed has tick 0.01, lot 0.00001)" % m["precision"])
    rest_ob = await ex.fetch_order_book(SYMBOL, 100)
    if not rest_ob["bids"] or not isinstance(rest_ob["nonce"], int):
        raise CheckFailed("fetch_order_book returned %r" % {k: rest_ob[k] for k in ("nonce", "symbol")})
    log("load_markets: %d spot markets, %s tick %s; fetch_order_book nonce %d"
        % (len(markets), SYMBOL, m["precision"]["price"], rest_ob["nonce"]))

    fetches = [0]
    orig_fetch = ex.fetch_rest_order_book_safe

    async def counting_fetch(*a, **kw):  # instrumentation only: ccxt's own method runs
        fetches[0] += 1
        return await orig_fetch(*a, **kw)

    ex.fetch_rest_order_book_safe = counting_fetch

    updates = 0
    done = deadline(RUN_SECONDS)
    while not done():
        ob = await asyncio.wait_for(ex.watch_order_book(SYMBOL), 10)
        updates += 1
        if ob["bids"] and ob["asks"] and ob["bids"][0][0] >= ob["asks"][0][0]:
            raise CheckFailed("crossed book during run")
    log("ran %.0fs: %d watch_order_book updates, nonce %s" % (RUN_SECONDS, updates, ob["nonce"]))

    for attempt in range(100):
        ob = await asyncio.wait_for(ex.watch_order_book(SYMBOL), 10)
        snap = rest_snapshot(port, 1000)  # blocking on purpose: ccxt cannot touch the book now
        if snap["lastUpdateId"] == ob["nonce"]:
            summary = compare_top(ob["bids"], ob["asks"], snap)
            break
        if snap["lastUpdateId"] < ob["nonce"]:
            raise CheckFailed("snapshot %d older than ccxt nonce %d" % (snap["lastUpdateId"], ob["nonce"]))
    else:
        raise CheckFailed("no snapshot lined up with ccxt's nonce in 100 tries")
    if fetches[0] != 1:
        raise CheckFailed("ccxt fetched %d snapshots (resync)" % fetches[0])
    return ("%s at nonce %d (aligned after %d tries); %d updates from 1 snapshot, no ChecksumError; "
            "load_markets + fetch_order_book ok" % (summary, ob["nonce"], attempt + 1, updates))


if __name__ == "__main__":
    port = port_from_argv()
    run_check(lambda: asyncio.run(main(port)))
