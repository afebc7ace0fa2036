"""Runs the README's example client (snapshot=true + resume=) through a flaky network.

The example's code is taken from README.md itself (the python block after the marker
`<!-- example: resume_book.py -->`), so the README cannot drift from what is tested. It connects
through a TCP proxy that cuts every connection (RST, no close frame) every 2 s; meanwhile a
reference client, connected straight to the server, keeps the book from its own in-band snapshot
and every real-time diff, remembering the top levels at each update id. At the end the
example's book must equal the reference's at the example's last update id, after at least three
reconnects that the server counted as resumes.

    example_resume.py PORT
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

import websockets

from _bookcheck import CheckFailed, log, port_from_argv, run_check

RUN_SECONDS = 9
CUT_EVERY = 2.0
TOP = 20
MARKER = "<!-- example: resume_book.py -->"


def readme_example():
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    at = text.find(MARKER)
    if at < 0:
        raise CheckFailed("README.md has no %s block" % MARKER)
    block = re.search(r"```python\n(.*?)```", text[at:], re.S)
    if not block:
        raise CheckFailed("no python block after %s" % MARKER)
    return block.group(1)


async def cutting_proxy(port, live):
    """A loopback proxy to the server; every connection it carries is in `live`."""

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
        live.extend([client_writer, server_writer])
        await asyncio.gather(
            pipe(client_reader, server_writer), pipe(server_reader, client_writer)
        )

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def cut_all(live):
    while True:
        await asyncio.sleep(CUT_EVERY)
        for writer in live:
            writer.transport.abort()  # RST: the network failed, nobody said goodbye
        live.clear()


def top(side, best):
    return sorted(side.items(), key=lambda level: float(level[0]), reverse=best)[:TOP]


async def reference(port, books, done):
    """Follows <symbol>@depth@0ms from an in-band snapshot; books[u] = (top bids, top asks)."""
    bids, asks = {}, {}
    async with websockets.connect(
        "ws://127.0.0.1:%d/ws/btcusdt@depth@0ms?snapshot=true" % port
    ) as ws:
        while not done.is_set():
            event = json.loads(await ws.recv())
            if event["e"] == "depthSnapshot":
                bids, asks = dict(event["bids"]), dict(event["asks"])
                last = event["lastUpdateId"]
            else:
                if event["U"] != last + 1:
                    raise CheckFailed("reference gap: %d then %d" % (last, event["U"]))
                for side, levels in ((bids, event["b"]), (asks, event["a"])):
                    for price, qty in levels:
                        if float(qty) == 0:
                            side.pop(price, None)
                        else:
                            side[price] = qty
                last = event["u"]
            books[last] = (top(bids, True), top(asks, False))


async def check(port):
    live = []
    proxy = await cutting_proxy(port, live)
    proxy_port = proxy.sockets[0].getsockname()[1]
    cutter = asyncio.create_task(cut_all(live))
    books, done = {}, asyncio.Event()
    ref = asyncio.create_task(reference(port, books, done))
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "resume_book.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(readme_example())
        example = await asyncio.create_subprocess_exec(
            sys.executable, script, "ws://127.0.0.1:%d" % proxy_port, "btcusdt",
            str(RUN_SECONDS), stdout=subprocess.PIPE,
        )
        out, _ = await example.communicate()
    cutter.cancel()
    proxy.close()
    if example.returncode != 0:
        raise CheckFailed("the example exited with %d: %s" % (example.returncode, out[-500:]))
    result = json.loads(out.decode().strip().splitlines()[-1])
    u, reconnects = result["u"], result["reconnects"]
    log("example: book at update %d after %d reconnects" % (u, reconnects))
    for _ in range(200):
        if u in books or ref.done():
            break
        await asyncio.sleep(0.05)
    done.set()
    if ref.done() and ref.exception():
        raise ref.exception()
    ref.cancel()
    if u not in books:
        raise CheckFailed("the reference never saw update %d" % u)
    want_bids, want_asks = books[u]
    got_bids = [tuple(level) for level in result["bids"]]
    got_asks = [tuple(level) for level in result["asks"]]
    if (got_bids, got_asks) != (want_bids, want_asks):
        raise CheckFailed("book differs at %d: %s / %s vs %s / %s"
                          % (u, got_bids[:3], got_asks[:3], want_bids[:3], want_asks[:3]))
    if reconnects < 3:
        raise CheckFailed("only %d reconnects" % reconnects)
    metrics = rest_json_text(port, "/metrics")
    resumed = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith('bookcast_resumes_total{outcome="caught_up"}'))
    if resumed < 3:
        raise CheckFailed("the server counted %d caught-up resumes" % resumed)
    return "README example kept the book across %d cuts (top %d levels equal at update %d)" % (
        reconnects, TOP, u)


def rest_json_text(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
        return r.read().decode()


if __name__ == "__main__":
    port = port_from_argv()
    run_check(lambda: asyncio.run(check(port)))
