"""Shared helpers for the client scripts (standard library only, so every venv can import it).

Each client script prints progress lines, then exactly one last line:
    OK: <summary>      and exits 0, or
    FAIL: <reason>     and exits 1.
run.sh turns that last line into `PASS name: ...` / `FAIL name: ...`.
"""

import json
import os
import sys
import time
import urllib.request
from decimal import Decimal

SYMBOL = "BTCUSDT"
# how long each library keeps its book before the check (raise it to cover server pings: 20 s)
RUN_SECONDS = float(os.environ.get("BOOKCAST_CLIENTS_RUN_SECONDS", "9"))
TOP = 5  # levels per side compared against the snapshot


class CheckFailed(Exception):
    pass


def log(*args):
    print(*args, flush=True)


def ok(summary):
    log("OK: " + summary)
    sys.exit(0)


def fail(reason):
    log("FAIL: " + reason)
    sys.exit(1)


def run_check(check):
    """Runs a script's check, `check()` returning its summary: OK, or FAIL with the reason."""
    try:
        ok(check())
    except CheckFailed as e:
        fail(str(e))
    except Exception as e:
        fail("%s: %s" % (type(e).__name__, e))


def port_from_argv():
    if len(sys.argv) < 2:
        fail("usage: %s PORT" % sys.argv[0])
    return int(sys.argv[1])


def rest_json(port, path, context=None):
    """GET http://127.0.0.1:port/path; over https, verified with the ssl context, if one is given."""
    url = "%s://127.0.0.1:%d%s" % ("https" if context else "http", port, path)
    with urllib.request.urlopen(url, timeout=5, context=context) as r:
        return json.loads(r.read())


def rest_snapshot(port, limit=1000, symbol=SYMBOL, context=None):
    return rest_json(port, "/api/v3/depth?symbol=%s&limit=%d" % (symbol, limit), context)


def levels(pairs, n=TOP):
    """[[price, qty], ...] (strings, floats or Decimals) -> [(Decimal, Decimal)] of the first n."""
    out = []
    for p, q in list(pairs)[:n]:
        out.append((Decimal(str(p)), Decimal(str(q))))
    return out


def norm(pairs, n=TOP):
    # Decimal("65000.02000000") == Decimal("65000.02"); floats parsed from the same string
    # convert back through str() to the same shortest repr, so equality is exact.
    return [(p.normalize(), q.normalize()) for p, q in levels(pairs, n)]


def compare_top(lib_bids, lib_asks, snap, n=TOP):
    """Raise CheckFailed unless the library's top n levels per side equal the snapshot's.

    lib_bids must be sorted best (highest) first, lib_asks best (lowest) first.
    """
    lb, la = norm(lib_bids, n), norm(lib_asks, n)
    sb, sa = norm(snap["bids"], n), norm(snap["asks"], n)
    if not lb or not la:
        raise CheckFailed("library book is empty (bids=%d asks=%d)" % (len(lb), len(la)))
    if lb[0][0] >= la[0][0]:
        raise CheckFailed("crossed book: best bid %s >= best ask %s" % (lb[0][0], la[0][0]))
    if lb != sb or la != sa:
        raise CheckFailed(
            "top %d differs from snapshot lastUpdateId=%s:\n  lib bids %s\n snap bids %s\n  lib asks %s\n snap asks %s"
            % (n, snap.get("lastUpdateId"), lb, sb, la, sa)
        )
    return "best bid %s < best ask %s, top %d/side == snapshot %s" % (
        lb[0][0], la[0][0], n, snap.get("lastUpdateId"))


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


class DiffBook:
    """Binance's documented local-book algorithm, for libraries that have no book of their own.

    on_event() every diff event (buffered until a snapshot is loaded); load_snapshot() a REST
    snapshot. Drops u <= lastUpdateId, requires U <= L+1 <= u of the first kept event and
    U == previous u + 1 after it. bookcast promises no gaps, so a gap raises CheckFailed instead
    of the resync a production client would do. needs_newer_snapshot() is the documented
    "snapshot older than the first buffered event: fetch it again" case.
    """

    def __init__(self, symbol=SYMBOL):
        self.symbol = symbol
        self.buffer = []
        self.last = None  # last applied update id (snapshot's, then each event's u)
        self.synced = False  # an event has been applied on top of the snapshot
        self.bids = {}
        self.asks = {}
        self.applied = 0
        self.dropped = 0
        self.max_span = 0  # largest u-U+1 seen: >1 shows windows merging updates

    def on_event(self, ev):
        if ev.get("e") != "depthUpdate" or ev.get("s") != self.symbol:
            raise CheckFailed("not a %s depthUpdate: %r" % (self.symbol, ev))
        if self.last is None:
            self.buffer.append(ev)
        else:
            self._apply(ev)

    def needs_newer_snapshot(self, snap):
        return bool(self.buffer) and snap["lastUpdateId"] + 1 < self.buffer[0]["U"]

    def load_snapshot(self, snap):
        self.bids = {Decimal(p): Decimal(q) for p, q in snap["bids"]}
        self.asks = {Decimal(p): Decimal(q) for p, q in snap["asks"]}
        self.last = snap["lastUpdateId"]
        self.synced = False
        events, self.buffer = self.buffer, []
        for ev in events:
            self._apply(ev)

    def _apply(self, ev):
        U, u = ev["U"], ev["u"]
        if u <= self.last:
            self.dropped += 1
            return
        if not self.synced:
            if not (U <= self.last + 1 <= u):
                raise CheckFailed("first event after snapshot %d has U=%d u=%d" % (self.last, U, u))
        elif U != self.last + 1:
            raise CheckFailed("gap: event U=%d after u=%d" % (U, self.last))
        for side, key in ((self.bids, "b"), (self.asks, "a")):
            for p, q in ev[key]:
                p, q = Decimal(p), Decimal(q)
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.last = u
        self.synced = True
        self.applied += 1
        self.max_span = max(self.max_span, u - U + 1)

    def top(self, n=TOP):
        bids = sorted(self.bids.items(), key=lambda kv: kv[0], reverse=True)[:n]
        asks = sorted(self.asks.items(), key=lambda kv: kv[0])[:n]
        return bids, asks
