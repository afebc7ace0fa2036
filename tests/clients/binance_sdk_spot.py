"""binance-sdk-spot (the official SDK): SpotWebSocketStreams (combined /stream, SUBSCRIBE with
UUID string ids, payloads validated into its pydantic models) + SpotRestAPI, with Binance's
documented local-book algorithm on top (_bookcheck.DiffBook), since the SDK keeps no book.

Checks: SUBSCRIBE ids are UUID strings and the SDK matched each reply to its pending request by
that id; LIST_SUBSCRIPTIONS (UUID id) lists both streams; every DiffBookDepthResponse /
TradeResponse model has all its fields set (a renamed or mistyped field would be None or fail
validation); the local book equals a snapshot whose lastUpdateId == the last applied window's u.
"""

import asyncio
import collections
import json
import logging
import os
import sys
import uuid

from _bookcheck import (RUN_SECONDS, SYMBOL, CheckFailed, DiffBook, compare_top, deadline, fail,
                        log, ok, port_from_argv, run_check)

# This file's name equals the SDK's package name: drop its directory from the import path so
# `binance_sdk_spot` below is the installed package, not this script.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

from binance_common.configuration import ConfigurationRestAPI, ConfigurationWebSocketStreams
from binance_sdk_spot.spot import Spot
from binance_sdk_spot.websocket_streams.models import DiffBookDepthUpdateSpeedEnum

DEPTH_STREAM = SYMBOL.lower() + "@depth@100ms"
TRADE_STREAM = SYMBOL.lower() + "@trade"


def depth_dict(m):
    d = {"e": m.e, "E": m.E, "s": m.s, "U": m.U, "u": m.u, "b": m.b, "a": m.a}
    missing = [k for k, v in d.items() if v is None]
    if missing:
        raise CheckFailed("DiffBookDepthResponse fields not set: %s (%r)" % (missing, m))
    return d


async def main(port):
    client = Spot(
        config_rest_api=ConfigurationRestAPI(base_path="http://127.0.0.1:%d" % port),
        config_ws_streams=ConfigurationWebSocketStreams(stream_url="ws://127.0.0.1:%d" % port),
    )
    rest = client.rest_api
    rest.ping()
    rest.time()
    ws = client.websocket_streams
    connection = await ws.create_connection()
    if connection is None or not ws.connections:
        raise CheckFailed("could not connect to /stream")
    conn = ws.connections[0]
    errors = []
    ws.on_connection("error", lambda e: errors.append("error %r" % (e,)))
    ws.on_connection("close", lambda: errors.append("closed"))

    sent = []
    orig_send = conn.websocket.send_str

    async def recording_send(data, *a, **kw):  # instrumentation only: records what the SDK sends
        sent.append(json.loads(data))
        return await orig_send(data, *a, **kw)

    conn.websocket.send_str = recording_send
    try:
        return await run(rest, ws, conn, sent, errors)
    finally:
        await ws.close_connection(close_session=True)


async def run(rest, ws, conn, sent, errors):
    book = DiffBook()
    inbox = collections.deque()
    wake = asyncio.Event()
    trades = []

    def on_depth(m):
        inbox.append(depth_dict(m))
        wake.set()

    def on_trade(m):
        if None in (m.e, m.E, m.s, m.t, m.p, m.q, m.T, m.m, m.M) or m.e != "trade":
            errors.append("TradeResponse incomplete: %r" % m)
        trades.append(m)

    speed = DiffBookDepthUpdateSpeedEnum.UPDATE_SPEED_100ms.value
    depth = await ws.diff_book_depth(symbol=SYMBOL, update_speed=speed)
    depth.on("message", on_depth)
    trade = await ws.trade(symbol=SYMBOL)
    trade.on("message", on_trade)

    listing = await ws.list_subscribe()  # LIST_SUBSCRIPTIONS with a UUID id, awaited by the SDK
    subs = [m for m in sent if m.get("method") == "SUBSCRIBE"]
    if len(subs) != 2:
        raise CheckFailed("expected 2 SUBSCRIBE messages, sent %r" % sent)
    for m in sent:
        uuid.UUID(m["id"])  # raises if the SDK did not use a UUID string
    if conn.pending_request:
        raise CheckFailed("requests without a matching reply (id not echoed?): %r"
                          % list(conn.pending_request))
    if not listing or sorted(listing.get("result") or []) != sorted([DEPTH_STREAM, TRADE_STREAM]):
        raise CheckFailed("LIST_SUBSCRIPTIONS returned %r" % (listing,))
    log("SUBSCRIBE ids %s matched; LIST_SUBSCRIPTIONS -> %r"
        % ([m["id"] for m in subs], listing["result"]))

    async def drain(wait=True):
        if errors:
            raise CheckFailed("; ".join(map(str, errors[:3])))
        if wait and not inbox:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 5)
            except asyncio.TimeoutError:
                raise CheckFailed("no depth event for 5s")
        while inbox:
            book.on_event(inbox.popleft())

    await drain()  # at least one event buffered since the subscription
    while True:
        snap = rest.depth(SYMBOL, limit=1000).data()
        snap = {"lastUpdateId": snap.last_update_id, "bids": snap.bids, "asks": snap.asks}
        if not book.needs_newer_snapshot(snap):
            break
    await drain(wait=False)
    book.load_snapshot(snap)

    done = deadline(RUN_SECONDS)
    while not done():
        await drain()
        bids, asks = book.top(1)
        if bids and asks and bids[0][0] >= asks[0][0]:
            raise CheckFailed("crossed book during run")
    log("ran %.0fs: %d windows applied (largest U..u span %d), %d trades"
        % (RUN_SECONDS, book.applied, book.max_span, len(trades)))

    for attempt in range(100):
        await drain()
        d = rest.depth(SYMBOL, limit=1000).data()
        snap = {"lastUpdateId": d.last_update_id, "bids": d.bids, "asks": d.asks}
        if snap["lastUpdateId"] == book.last:
            bids, asks = book.top()
            summary = compare_top(bids, asks, snap)
            if not trades:
                raise CheckFailed("no trade events")
            return ("%s (aligned after %d tries); %d windows, no gaps; UUID SUBSCRIBE ids matched; "
                    "%d typed trades" % (summary, attempt + 1, book.applied, len(trades)))
        if snap["lastUpdateId"] < book.last:
            raise CheckFailed("snapshot %d older than applied u=%d" % (snap["lastUpdateId"], book.last))
    raise CheckFailed("no snapshot lined up with a window's u in 100 tries")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    port = port_from_argv()
    run_check(lambda: asyncio.run(main(port)))
