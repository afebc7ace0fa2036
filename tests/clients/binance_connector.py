"""binance-connector (3.x): SpotWebsocketStreamClient (combined /stream, SUBSCRIBE with a ms
timestamp id) + Spot REST client, with Binance's documented local-book algorithm on top
(_bookcheck.DiffBook), since the library keeps no book.

Strong check: the local book is compared with a snapshot whose lastUpdateId equals the u of the
last applied <s>@depth@100ms window, so the check sees exactly the same book state. Any sequence
gap fails the run.
"""

import json
import queue
import time

from _bookcheck import (RUN_SECONDS, SYMBOL, CheckFailed, DiffBook, compare_top, deadline, fail,
                        log, ok, port_from_argv, run_check)
from binance.spot import Spot
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient

STREAM = SYMBOL.lower() + "@depth@100ms"


def main(port):
    rest = Spot(base_url="http://127.0.0.1:%d" % port)
    if rest.ping() != {}:
        raise CheckFailed("ping did not return {}")
    rest.time()
    info = rest.exchange_info(symbol=SYMBOL)
    if info["symbols"][0]["symbol"] != SYMBOL:
        raise CheckFailed("exchangeInfo for %s returned %r" % (SYMBOL, info["symbols"][0]["symbol"]))

    inbox = queue.Queue()
    closed = []

    def on_message(_, data):
        inbox.put(json.loads(data))

    def on_close(_):
        closed.append("closed")

    def on_error(_, e):
        closed.append("error: %r" % (e,))

    ws = SpotWebsocketStreamClient(stream_url="ws://127.0.0.1:%d" % port, is_combined=True,
                                   on_message=on_message, on_close=on_close, on_error=on_error)
    try:
        return run(rest, ws, inbox, closed)
    finally:
        ws.stop()


def next_msg(inbox, closed, timeout=5):
    if closed:
        raise CheckFailed("websocket %s" % closed[0])
    try:
        return inbox.get(timeout=timeout)
    except queue.Empty:
        raise CheckFailed("no message for %ds (closed: %r)" % (timeout, closed))


def run(rest, ws, inbox, closed):
    book = DiffBook()
    ws.diff_book_depth(symbol=SYMBOL.lower(), speed=100)  # SUBSCRIBE, id = ms timestamp

    def handle(msg):
        if "stream" in msg:
            if msg["stream"] != STREAM:
                raise CheckFailed("event for unexpected stream %r" % msg["stream"])
            book.on_event(msg["data"])
            return None
        return msg  # a control reply

    reply = None
    while reply is None:
        reply = handle(next_msg(inbox, closed))
    if reply.get("result", "missing") is not None or not isinstance(reply.get("id"), int):
        raise CheckFailed("SUBSCRIBE reply %r" % reply)

    snapshots = 0
    while True:
        snap = rest.depth(SYMBOL, limit=1000)
        snapshots += 1
        if not book.needs_newer_snapshot(snap):
            break
    book.load_snapshot(snap)
    log("subscribed (reply id %d); snapshot %d loaded after %d fetch(es), %d buffered events"
        % (reply["id"], snap["lastUpdateId"], snapshots, book.applied + book.dropped))

    done = deadline(RUN_SECONDS)
    while not done():
        if handle(next_msg(inbox, closed)) is not None:
            raise CheckFailed("unexpected control message")
        bids, asks = book.top(1)
        if bids and asks and bids[0][0] >= asks[0][0]:
            raise CheckFailed("crossed book during run")
    log("ran %.0fs: %d windows applied (largest U..u span %d), last u %d"
        % (RUN_SECONDS, book.applied, book.max_span, book.last))

    # Align: right after applying a window (queue drained), fetch a snapshot; when its
    # lastUpdateId equals the window's u, both describe the same book state.
    for attempt in range(100):
        handle(next_msg(inbox, closed))
        while not inbox.empty():
            handle(inbox.get())
        snap = rest.depth(SYMBOL, limit=1000)
        if snap["lastUpdateId"] == book.last:
            bids, asks = book.top()
            summary = compare_top(bids, asks, snap)
            return "%s (aligned after %d tries); %d windows applied, no gaps, max U..u span %d" % (
                summary, attempt + 1, book.applied, book.max_span)
        if snap["lastUpdateId"] < book.last:
            raise CheckFailed("snapshot %d older than applied event u=%d" % (snap["lastUpdateId"], book.last))
    raise CheckFailed("no snapshot lined up with a window's u in 100 tries")


if __name__ == "__main__":
    port = port_from_argv()
    run_check(lambda: main(port))
