'use strict';
// The Bun (Bun.serve, uWebSockets inside) peer for benches/fanout.sh.
//
// It relays one bookcast stream per symbol, <sym><suffix> (--stream, default @depth@0ms,
// bookcast's real-time diff; e.g. @depth or @trade), like the Node peer: one upstream
// connection (Bun's built-in WebSocket client) to a bookcast instance carries every symbol's
// <sym><suffix> as combined messages, and clients connect at /ws/<sym><suffix>. The raw
// `data` payload of each message is sliced out of the text (not parsed) and handed to
// server.publish(stream, payload), which uWebSockets' topic tree writes as one text frame to
// every client that ws.subscribe()d to that stream, in order, corked per socket.
//
// Options, chosen to match bookcast and the other peers:
// - perMessageDeflate: false: nobody compresses.
// - backpressureLimit 256 KiB + closeOnBackpressureLimit: bookcast's default queue bound; past
//   it a slow consumer is closed (the Node peer terminates it), never silently skipped.
// - maxPayloadLength 4096: the Node and Go peers' bound on incoming frames.
// - sendPings + idleTimeout 60 s: uWebSockets pings a client that has sent nothing for about a
//   minute and closes it if the ping goes unanswered (bookcast: ping every 20 s, 60 s pong
//   timeout; Node: ping every 20 s). A Bun idleTimeout must be a multiple of 4, at most 960.
// - The listen backlog is uSockets' own (Bun.serve has no option for it).
// Payloads stay JS strings end to end: the upstream message is a text frame, so it arrives as a
// string, the slice shares its characters, and publish() writes text frames from strings (a
// Buffer would go out as a binary frame).
//
// Run: bun server.js --listen 127.0.0.1:9605 --upstream 127.0.0.1:9600 [--stream @depth@0ms]

const MAX_BUFFERED = 256 * 1024; // bookcast's default queue bound
const IDLE_TIMEOUT_S = 60;
const MAX_PAYLOAD = 4096;
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

async function main() {
  const listen = split(arg('--listen', '127.0.0.1:9605'));
  const upstream = arg('--upstream', '127.0.0.1:9443');
  const suffix = arg('--stream', '@depth@0ms');
  if (!SUFFIX.test(suffix)) throw new Error(`--stream must match ${SUFFIX.source} (got '${suffix}')`);

  const res = await fetch(`http://${upstream}/api/v3/exchangeInfo`);
  if (res.status !== 200) throw new Error(`http://${upstream}/api/v3/exchangeInfo: status ${res.status}`);
  const info = new Uint8Array(await res.arrayBuffer());
  const symbols = JSON.parse(new TextDecoder().decode(info)).symbols.map((s) => s.symbol.toLowerCase());
  const topics = new Set(symbols.map((s) => `${s}${suffix}`));

  const streams = [...topics].join('/');
  const up = new WebSocket(`ws://${upstream}/stream?streams=${streams}&timeUnit=MICROSECOND`);
  const STREAM = '{"stream":"';
  const DATA = '","data":';
  let server;
  up.onmessage = (ev) => {
    // {"stream":"<name>","data":<payload>}: slice, don't parse.
    const msg = ev.data;
    if (typeof msg !== 'string' || !msg.startsWith(STREAM) || msg.charCodeAt(msg.length - 1) !== 0x7d) return;
    const end = msg.indexOf(DATA, STREAM.length);
    if (end < 0) return;
    const topic = msg.slice(STREAM.length, end);
    if (!topics.has(topic)) return;
    server.publish(topic, msg.slice(end + DATA.length, msg.length - 1));
  };
  up.onclose = (ev) => {
    console.error(`peer-bun: upstream closed (${ev.code})`);
    process.exit(1);
  };
  up.onerror = (ev) => {
    console.error(`peer-bun: upstream: ${ev.message || 'error'}`);
    process.exit(1);
  };
  up.onopen = () => {
    // Listen only once the feed is up: fanout.sh takes an answered exchangeInfo as ready.
    server = Bun.serve({
      hostname: listen.host,
      port: listen.port,
      fetch(req, srv) {
        // The path of an absolute URL: after "http://host:port".
        const url = req.url;
        const q = url.indexOf('?');
        const path = url.slice(url.indexOf('/', url.indexOf('//') + 2), q < 0 ? url.length : q);
        if (path === '/api/v3/exchangeInfo' && req.method === 'GET') {
          return new Response(info, { headers: { 'Content-Type': 'application/json' } });
        }
        // /ws/<stream>[/<stream>...]; the query (timeUnit=MICROSECOND) is accepted and ignored.
        if (!path.startsWith('/ws/')) return new Response(null, { status: 404 });
        const subs = path.slice(4).split('/').map(canonical);
        if (subs.some((t) => !topics.has(t))) return new Response(null, { status: 400 });
        if (srv.upgrade(req, { data: subs })) return undefined;
        return new Response(null, { status: 404 }); // not an upgrade request (as Node answers)
      },
      websocket: {
        open(ws) {
          for (const t of ws.data) ws.subscribe(t);
        },
        message() {}, // requests from clients are not served (nor by the Node peer)
        perMessageDeflate: false,
        maxPayloadLength: MAX_PAYLOAD,
        backpressureLimit: MAX_BUFFERED,
        closeOnBackpressureLimit: true,
        idleTimeout: IDLE_TIMEOUT_S,
        sendPings: true,
        publishToSelf: false,
      },
    });
    console.error(
      `peer-bun: ${topics.size} <sym>${suffix} streams from ${upstream}, listening on ${listen.host}:${server.port}`,
    );
  };
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

main().catch((err) => {
  console.error(`peer-bun: ${err.message}`);
  process.exit(1);
});
