'use strict';
// The Node.js (ws) peer for benches/fanout.sh.
//
// It relays one bookcast stream per symbol, <sym><suffix> (--stream, default @depth@0ms,
// bookcast's real-time diff; e.g. @depth or @trade): one upstream connection to a bookcast instance carries every
// symbol's <sym><suffix> as combined messages, and clients connect at /ws/<sym><suffix>. The
// raw `data` payload of each message is sliced out as a Buffer view (not parsed, not copied)
// and sent with ws.send() to every client subscribed to that stream. For a server (unmasked)
// Buffer, ws writes a 2-4 byte header and the shared payload Buffer with one corked write, so
// the payload is never copied per client. Building the frame once with
// WebSocket.Sender.frame() would need the private ws._socket to write it, so this uses only the
// public API. A client whose bufferedAmount passes the bound is a slow consumer and is
// terminated.
//
// Run: node server.js --listen 127.0.0.1:9602 --upstream 127.0.0.1:9600 [--stream @depth@0ms]

const http = require('http');
const WebSocket = require('ws');

const MAX_BUFFERED = 256 * 1024; // bookcast's default queue bound
const PING_INTERVAL_MS = 20_000;
const SEND_OPTS = { binary: false }; // a text frame from a Buffer
const SUFFIX = /^@[A-Za-z0-9_@]+$/; // what fanout.sh accepts as STREAM

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

function split(hostPort) {
  const i = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) };
}

// A client's stream name as the upstream spells it in "stream": bookcast matches the symbol
// case-insensitively and the rest exactly (aggTrade, bookTicker), and names the symbol in
// lower case.
function canonical(name) {
  const at = name.indexOf('@');
  return at < 0 ? name.toLowerCase() : name.slice(0, at).toLowerCase() + name.slice(at);
}

function fetchBody(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          res.statusCode === 200
            ? resolve(Buffer.concat(chunks))
            : reject(new Error(`${url}: status ${res.statusCode}`)),
        );
      })
      .on('error', reject);
  });
}

function reject(socket, status, text) {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

async function main() {
  const listen = split(arg('--listen', '127.0.0.1:9602'));
  const upstream = arg('--upstream', '127.0.0.1:9443');
  const suffix = arg('--stream', '@depth@0ms');
  if (!SUFFIX.test(suffix)) throw new Error(`--stream must match ${SUFFIX.source} (got '${suffix}')`);

  const info = await fetchBody(`http://${upstream}/api/v3/exchangeInfo`);
  const symbols = JSON.parse(info).symbols.map((s) => s.symbol.toLowerCase());
  /** stream name -> Set of subscribed client sockets */
  const topics = new Map(symbols.map((s) => [`${s}${suffix}`, new Set()]));
  const clients = new Set();

  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url.split('?')[0] === '/api/v3/exchangeInfo') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': info.length });
      res.end(info);
    } else {
      res.writeHead(404, { 'Content-Length': 0 });
      res.end();
    }
  });
  const wss = new WebSocket.Server({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: 4096,
    clientTracking: false,
  });

  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {});
    // /ws/<stream>[/<stream>...]; the query (timeUnit=MICROSECOND) is accepted and ignored.
    const path = req.url.split('?')[0];
    if (!path.startsWith('/ws/')) return reject(socket, 404, 'Not Found');
    const subs = path.slice(4).split('/').map((s) => topics.get(canonical(s)));
    if (subs.some((t) => t === undefined)) return reject(socket, 400, 'Bad Request');
    wss.handleUpgrade(req, socket, head, (ws) => {
      clients.add(ws);
      for (const t of subs) t.add(ws);
      ws.on('error', () => {});
      ws.on('close', () => {
        clients.delete(ws);
        for (const t of subs) t.delete(ws);
      });
    });
  });

  const ping = setInterval(() => {
    for (const ws of clients) ws.ping();
  }, PING_INTERVAL_MS);
  ping.unref();

  const streams = [...topics.keys()].join('/');
  const up = new WebSocket(`ws://${upstream}/stream?streams=${streams}&timeUnit=MICROSECOND`, {
    perMessageDeflate: false,
  });
  const STREAM = Buffer.from('{"stream":"');
  const DATA = Buffer.from('","data":');
  up.on('message', (msg) => {
    // {"stream":"<name>","data":<payload>}: slice, don't parse.
    if (msg.length < STREAM.length + 2 || msg.compare(STREAM, 0, STREAM.length, 0, STREAM.length) !== 0) return;
    const end = msg.indexOf(DATA, STREAM.length);
    if (end < 0 || msg[msg.length - 1] !== 0x7d) return;
    const subscribers = topics.get(msg.toString('latin1', STREAM.length, end));
    if (subscribers === undefined || subscribers.size === 0) return;
    const payload = msg.subarray(end + DATA.length, msg.length - 1);
    for (const ws of subscribers) {
      if (ws.bufferedAmount > MAX_BUFFERED) {
        ws.terminate(); // slow consumer
        continue;
      }
      ws.send(payload, SEND_OPTS);
    }
  });
  up.on('close', (code) => {
    console.error(`peer-node: upstream closed (${code})`);
    process.exit(1);
  });
  up.on('error', (err) => {
    console.error(`peer-node: upstream: ${err.message}`);
    process.exit(1);
  });
  up.on('open', () => {
    // Node's default accept backlog is 511; thousands of clients connecting at once overflow it
    // while the loop is busy fanning out, and the kernel drops their SYNs. Go asks for
    // net.core.somaxconn (4096 here), tokio for 1024.
    server.listen({ port: listen.port, host: listen.host, backlog: 4096 }, () => {
      console.error(
        `peer-node: ${topics.size} <sym>${suffix} streams from ${upstream}, listening on ${listen.host}:${listen.port}`,
      );
    });
  });
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

main().catch((err) => {
  console.error(`peer-node: ${err.message}`);
  process.exit(1);
});
