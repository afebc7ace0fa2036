"""binance-connector (3.x): its WebSocket API client, SpotWebsocketAPIClient, pointed at
bookcast's /ws-api/v3 (the same installed library and virtualenv as binance_connector.py).

The library sends each request with a UUID string id (get_uuid) and hands every answer, unparsed,
to on_message; it keeps no state about requests, so the checks are on what reaches it:
- every request the library sent gets exactly one answer, with its id, in the order sent;
- ping, time, exchangeInfo (symbol and symbols) and depth answer status 200 with Binance's
  result shapes, and every answer carries rateLimits REQUEST_WEIGHT whose count grows by
  Binance's weight of the method (1, 1, 20, 20, 5 for limit 5, 250 for limit 5000);
- the depth snapshot is a sane book (8-decimal strings, not crossed) whose lastUpdateId is not
  ahead of a REST snapshot fetched after it;
- an unknown symbol is answered 400 with Binance's -1121 and the connection stays usable;
- a method of SPEC.md's list whose REST endpoint this bookcast may not serve yet
  (trades.recent) answers either 200 or 400 -1020, never a dropped connection.
"""

import json
import queue
import time

from _bookcheck import CheckFailed, log, port_from_argv, rest_snapshot, run_check

from binance.websocket.spot.websocket_api import SpotWebsocketAPIClient

SYMBOL = "BTCUSDT"


def is_e8(text):
    head, _, frac = str(text).partition(".")
    return bool(head) and len(frac) == 8


def check(port):
    inbox = queue.Queue()
    closed = []
    client = SpotWebsocketAPIClient(
        stream_url="ws://127.0.0.1:%d/ws-api/v3" % port,
        on_message=lambda _, message: inbox.put(message),
        on_close=lambda _: closed.append(True),
    )
    sent = []
    library_send = client.send

    def recording_send(payload):  # instrumentation only: records what the library sends
        sent.append(payload)
        return library_send(payload)

    client.send = recording_send
    try:
        return run(port, client, inbox, sent, closed)
    finally:
        client.stop()


def answer_to(inbox, sent, closed):
    """The next message, which must answer the last request the library sent."""
    request = sent[-1]
    try:
        message = json.loads(inbox.get(timeout=10))
    except queue.Empty:
        raise CheckFailed("no answer to %r within 10 s (closed: %s)" % (request, bool(closed)))
    if message.get("id") != request["id"]:
        raise CheckFailed("answer id %r, request id %r" % (message.get("id"), request["id"]))
    limits = message.get("rateLimits") or []
    if len(limits) != 1 or limits[0].get("rateLimitType") != "REQUEST_WEIGHT" \
            or limits[0].get("interval") != "MINUTE" or not isinstance(limits[0].get("count"), int):
        raise CheckFailed("rateLimits not as Binance sends them: %r" % (message,))
    return message


def result_of(message):
    if message.get("status") != 200 or "result" not in message:
        raise CheckFailed("expected status 200 with a result: %r" % (message,))
    return message["result"]


def run(port, client, inbox, sent, closed):
    counts = []

    def weighed(message, weight, what):
        count = message["rateLimits"][0]["count"]
        # A new minute restarts the count; otherwise it grows by exactly the method's weight.
        if counts and count != counts[-1] + weight and count > weight:
            raise CheckFailed("%s: weight count %d after %d, expected +%d"
                              % (what, count, counts[-1], weight))
        counts.append(count)

    client.ping_connectivity()
    message = answer_to(inbox, sent, closed)
    if result_of(message) != {}:
        raise CheckFailed("ping result %r" % (message,))
    if not isinstance(sent[-1]["id"], str) or len(sent[-1]["id"]) != 36:
        raise CheckFailed("expected the library's UUID ids, sent %r" % (sent[-1],))
    counts.append(message["rateLimits"][0]["count"])

    client.server_time()
    message = answer_to(inbox, sent, closed)
    server_time = result_of(message).get("serverTime")
    if not isinstance(server_time, int) or abs(server_time - time.time() * 1000) > 5000:
        raise CheckFailed("time result %r" % (message,))
    weighed(message, 1, "time")

    client.exchange_info(symbol=SYMBOL)
    message = answer_to(inbox, sent, closed)
    symbols = result_of(message).get("symbols") or []
    if [s.get("symbol") for s in symbols] != [SYMBOL] or symbols[0].get("status") != "TRADING":
        raise CheckFailed("exchangeInfo(symbol) result %r" % (message,))
    weighed(message, 20, "exchangeInfo")

    client.exchange_info(symbols=[SYMBOL, "ETHUSDT"])
    message = answer_to(inbox, sent, closed)
    names = sorted(s.get("symbol") for s in result_of(message).get("symbols") or [])
    if names != ["BTCUSDT", "ETHUSDT"]:
        raise CheckFailed("exchangeInfo(symbols) listed %r" % (names,))
    weighed(message, 20, "exchangeInfo")

    client.order_book(symbol=SYMBOL, limit=5)
    message = answer_to(inbox, sent, closed)
    book = result_of(message)
    bids, asks = book.get("bids") or [], book.get("asks") or []
    if not (0 < len(bids) <= 5 and 0 < len(asks) <= 5):
        raise CheckFailed("depth(limit=5) sides %d/%d" % (len(bids), len(asks)))
    if not all(is_e8(p) and is_e8(q) for p, q in bids + asks):
        raise CheckFailed("depth levels are not 8-decimal strings: %r" % (book,))
    if float(bids[0][0]) >= float(asks[0][0]):
        raise CheckFailed("crossed depth snapshot: %r / %r" % (bids[0], asks[0]))
    last = book.get("lastUpdateId")
    rest_last = rest_snapshot(port, limit=5)["lastUpdateId"]
    if not isinstance(last, int) or last > rest_last:
        raise CheckFailed("depth lastUpdateId %r ahead of a later REST snapshot's %r"
                          % (last, rest_last))
    weighed(message, 5, "depth(limit=5)")
    # The REST snapshot above spent the same address's budget (REST and the WebSocket API
    # share it, as on Binance): depth with limit 5 weighs 5.
    counts.append(counts[-1] + 5)

    client.order_book(symbol=SYMBOL, limit=5000)
    message = answer_to(inbox, sent, closed)
    result_of(message)
    weighed(message, 250, "depth(limit=5000)")

    client.order_book(symbol="NOPEUSDT")
    message = answer_to(inbox, sent, closed)
    error = message.get("error") or {}
    if message.get("status") != 400 or error.get("code") != -1121 or "result" in message:
        raise CheckFailed("unknown symbol: expected 400 -1121, got %r" % (message,))

    client.recent_trades(symbol=SYMBOL, limit=5)
    message = answer_to(inbox, sent, closed)
    if message.get("status") == 200:
        trades_note = "trades.recent served"
    elif message.get("status") == 400 and (message.get("error") or {}).get("code") == -1020:
        trades_note = "trades.recent not served yet (-1020)"
    else:
        raise CheckFailed("trades.recent: %r" % (message,))

    client.ping_connectivity()
    result_of(answer_to(inbox, sent, closed))
    if not inbox.empty():
        raise CheckFailed("unasked message: %r" % (inbox.get(),))
    if closed:
        raise CheckFailed("the connection closed")
    log("weight counts: %s" % counts)
    return ("%d requests with UUID ids, each answered once in order; ping, time, exchangeInfo, "
            "depth as on Binance, weights %s; -1121 for an unknown symbol; %s"
            % (len(sent), "/".join(str(b - a) for a, b in zip(counts, counts[1:])), trades_note))


if __name__ == "__main__":
    port = port_from_argv()
    run_check(lambda: check(port))
