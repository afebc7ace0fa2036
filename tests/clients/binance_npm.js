'use strict';
// The binance npm package (3.x, tiagosiebler/binance), unmodified: its WebsocketClient on the
// combined /stream (SUBSCRIBE with integer ids, its own pings) and its MainClient for REST, with
// Binance's documented local-book algorithm on top (the package keeps no book), as
// _bookcheck.py does for the Python libraries.
//
// Checks: the REST snapshot plus <s>@depth@100ms diffs (first kept diff brackets
// lastUpdateId + 1, then U = previous u + 1) build a book equal to a later REST snapshot taken
// at a window's last u; and REST klines and the 24h ticker answer through the package's calls.
// Prints "OK: ..." or "FAIL: ..." as the last line; run by tests/clients/run.sh with PORT.
//
// Run: node binance_npm.js PORT

const path = require('path');
const { MainClient, WebsocketClient } = require(path.join(__dirname, 'binance-npm', 'node_modules', 'binance'));

const SYMBOL = 'XRPUSDT'; // 20 updates/s: a REST snapshot often lands on a window's end
const STREAM = SYMBOL.toLowerCase() + '@depth@100ms';
const RUN_MS = Number(process.env.BOOKCAST_CLIENTS_RUN_SECONDS || 9) * 1000;
const port = Number(process.argv[2]);

function fail(msg) {
  console.log('FAIL: ' + msg);
  process.exit(1);
}

function applySide(side, levels) {
  for (const [price, qty] of levels) {
    if (Number(qty) === 0) side.delete(price);
    else side.set(price, qty);
  }
}

function sameBook(book, snapshot) {
  const other = { bids: new Map(), asks: new Map() };
  applySide(other.bids, snapshot.bids);
  applySide(other.asks, snapshot.asks);
  for (const side of ['bids', 'asks']) {
    if (book[side].size !== other[side].size) return `${side}: ${book[side].size} levels vs ${other[side].size}`;
    for (const [price, qty] of other[side]) {
      if (book[side].get(price) !== qty) return `${side} ${price}: ${book[side].get(price)} vs ${qty}`;
    }
  }
  return null;
}

async function main() {
  const rest = new MainClient({ baseUrl: `http://127.0.0.1:${port}` });
  const klines = await rest.getKlines({ symbol: SYMBOL, interval: '1m', limit: 5 });
  if (!Array.isArray(klines) || klines.length === 0) fail('getKlines returned no klines');
  const ticker = await rest.get24hrChangeStatistics({ symbol: SYMBOL });
  if (ticker.symbol !== SYMBOL) fail(`24hr ticker for ${JSON.stringify(ticker.symbol)}`);

  const events = [];
  let waiter = null;
  const ws = new WebsocketClient({ wsUrl: `ws://127.0.0.1:${port}`, beautify: false });
  // The package unwraps combined messages: the payload, with the stream as `streamName`.
  ws.on('message', (message) => {
    if (message && message.streamName === STREAM && message.e === 'depthUpdate') {
      events.push(message);
      if (waiter) waiter();
    }
  });
  ws.on('exception', (e) => fail('websocket exception: ' + JSON.stringify(e).slice(0, 200)));
  const next = async () => {
    const deadline = Date.now() + 15000;
    while (events.length === 0) {
      if (Date.now() > deadline) fail('no depth event within 15 s');
      await new Promise((resolve) => { waiter = resolve; setTimeout(resolve, 200); });
    }
    return events.shift();
  };
  await ws.subscribe([STREAM], 'main');
  // Buffer first, then the snapshot (Binance's order of steps).
  await next().then((e) => events.unshift(e));
  const snapshot = await rest.getOrderBook({ symbol: SYMBOL, limit: 1000 });
  const lastId = snapshot.lastUpdateId;
  const book = { bids: new Map(), asks: new Map() };
  applySide(book.bids, snapshot.bids);
  applySide(book.asks, snapshot.asks);
  let event = await next();
  while (event.u <= lastId) event = await next();
  if (!(event.U <= lastId + 1 && lastId + 1 <= event.u)) fail(`first diff ${event.U}..${event.u} does not bracket ${lastId + 1}`);
  applySide(book.bids, event.b);
  applySide(book.asks, event.a);
  let previous = event.u;
  let applied = 1;
  const until = Date.now() + RUN_MS;
  let compared = 0;
  while (Date.now() < until || compared === 0) {
    event = await next();
    if (event.U !== previous + 1) fail(`gap: ${event.U} after ${previous}`);
    applySide(book.bids, event.b);
    applySide(book.asks, event.a);
    previous = event.u;
    applied += 1;
    // Compare when a REST snapshot lands exactly on this window's last update.
    const later = await rest.getOrderBook({ symbol: SYMBOL, limit: 1000 });
    if (later.lastUpdateId === previous && events.length === 0) {
      const diff = sameBook(book, later);
      if (diff) fail(`book differs from the snapshot at ${previous}: ${diff}`);
      compared += 1;
    }
    if (Date.now() > until + 20000) fail('no snapshot landed on a window boundary in 20 s');
  }
  ws.closeAll(true);
  console.log(`OK: ${applied} diffs from 1 snapshot, no gap; book == snapshot at ${compared} window ends; klines + 24h ticker via MainClient`);
  process.exit(0);
}

main().catch((e) => fail(e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : JSON.stringify(e).slice(0, 300)));
