// bookcast live dashboard: one combined WebSocket back to the server that serves this page,
// carrying `!stats@1s` (server health) and the chosen symbol's top-of-book and trades.
// Charts are uPlot (vendored, MIT). No network beyond this server.
"use strict";

(function () {
  const HISTORY = 300; // seconds of stats kept on the charts (5 minutes)
  const BOOK_LEVELS = 10;
  const TRADES_SHOWN = 15;
  const query = new URLSearchParams(location.search);
  const token = query.get("token"); // passed through when the server requires one

  const $ = (id) => document.getElementById(id);
  const statusEl = $("status");
  const symbolEl = $("symbol");

  // Column-oriented series for uPlot: x (unix seconds) then one array per line.
  const series = { t: [], p50: [], p99: [], p999: [], frames: [], conns: [], slow: [] };
  let samples = 0;
  let symbol = null;
  let ws = null;
  let nextId = 1;
  let retryMs = 500;
  const trades = [];

  // ---- formatting -------------------------------------------------------------------------
  const int = (n) => Math.round(n).toLocaleString("en-US");
  const micros = (us) => (us >= 10000 ? (us / 1000).toFixed(1) + " ms" : us >= 1000 ? (us / 1000).toFixed(2) + " ms" : us + " µs");
  const setText = (id, text) => { const el = $(id); if (el.textContent !== text) el.textContent = text; };
  const setStatus = (state, text) => { statusEl.className = "status " + state; statusEl.textContent = text; };

  // ---- charts -----------------------------------------------------------------------------
  function width(el) { return Math.max(300, el.clientWidth || 400); }

  function makeChart(id, opts, data) {
    const el = $(id);
    const chart = new uPlot(Object.assign({ width: width(el), height: 220 }, opts), data, el);
    return { el, chart };
  }

  const latency = makeChart("latency-chart", {
    scales: { y: { distr: 3 } },
    axes: [{}, { label: "µs", size: 60 }],
    series: [{}, { label: "p50", stroke: "#2a9d8f", width: 2 }, { label: "p99", stroke: "#f4a261", width: 2 },
      { label: "p99.9", stroke: "#e76f51", width: 2 }],
  }, [series.t, series.p50, series.p99, series.p999]);

  const rate = makeChart("rate-chart", {
    scales: { conns: {} },
    axes: [{}, { label: "frames/s", size: 70 }, { scale: "conns", side: 1, label: "connections", size: 60, grid: { show: false } }],
    series: [{}, { label: "frames/s", stroke: "#4a7fd4", width: 2, fill: "rgba(74,127,212,0.08)" },
      { label: "connections", stroke: "#888", width: 1, scale: "conns" }],
  }, [series.t, series.frames, series.conns]);

  const slow = makeChart("slow-chart", {
    axes: [{}, { label: "per s", size: 50 }],
    series: [{}, { label: "slow-consumer disconnects/s", stroke: "#c2413b", width: 2, fill: "rgba(194,65,59,0.1)" }],
  }, [series.t, series.slow]);

  const charts = [latency, rate, slow];

  function redraw() {
    latency.chart.setData([series.t, series.p50, series.p99, series.p999]);
    rate.chart.setData([series.t, series.frames, series.conns]);
    slow.chart.setData([series.t, series.slow]);
    for (const c of charts) c.el.dataset.points = String(series.t.length);
  }

  window.addEventListener("resize", () => {
    for (const c of charts) c.chart.setSize({ width: width(c.el), height: 220 });
  });

  // ---- stream handlers --------------------------------------------------------------------
  function onStats(s) {
    const t = s.E / 1000;
    const lat = s.latencyUs || {};
    const has = lat.count > 0;
    series.t.push(t);
    // A log scale cannot show 0: a second with no frames is a gap, not a zero.
    series.p50.push(has ? Math.max(1, lat.p50) : null);
    series.p99.push(has ? Math.max(1, lat.p99) : null);
    series.p999.push(has ? Math.max(1, lat.p999) : null);
    series.frames.push(s.framesPerSec);
    series.conns.push(s.connections);
    series.slow.push(s.slowConsumerDisconnectsPerSec);
    if (series.t.length > HISTORY) for (const k in series) series[k].shift();
    samples += 1;
    document.body.dataset.samples = String(samples);

    setText("connections", int(s.connections));
    setText("frames", int(s.framesPerSec));
    setText("bytes", (s.bytesPerSec / 1e6).toFixed(2));
    setText("updates", int(s.engineUpdatesPerSec));
    setText("p50", has ? micros(lat.p50) : "–");
    setText("p99", has ? micros(lat.p99) : "–");
    setText("p999", has ? micros(lat.p999) : "–");
    setText("slow", int(s.slowConsumerDisconnects));
    redraw();
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function onBook(book) {
    const body = $("book").tBodies[0];
    const rows = [];
    for (let i = 0; i < BOOK_LEVELS; i++) {
      const bid = book.bids[i] || ["", ""];
      const ask = book.asks[i] || ["", ""];
      const tr = document.createElement("tr");
      tr.append(cell(bid[1]), cell(bid[0], "bid"), cell(ask[0], "ask"), cell(ask[1]));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    setText("book-update", "update " + book.lastUpdateId);
    body.dataset.update = String(book.lastUpdateId);
    body.dataset.symbol = symbol;
  }

  function onTrade(trade) {
    trades.unshift(trade);
    if (trades.length > TRADES_SHOWN) trades.length = TRADES_SHOWN;
    const body = $("trades").tBodies[0];
    body.replaceChildren(...trades.map((x) => {
      const tr = document.createElement("tr");
      const side = x.m ? "sell" : "buy"; // buyer is maker: the taker sold
      tr.append(cell(new Date(x.T).toISOString().slice(11, 23)), cell(x.p, side), cell(x.q), cell(side, side));
      return tr;
    }));
  }

  // ---- the WebSocket ----------------------------------------------------------------------
  function symbolStreams(sym) {
    const s = sym.toLowerCase();
    return [s + "@depth" + BOOK_LEVELS + "@100ms", s + "@trade"];
  }

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const streams = ["!stats@1s"].concat(symbol ? symbolStreams(symbol) : []).join("/");
    let url = scheme + location.host + "/stream?streams=" + streams;
    if (token) url += "&token=" + encodeURIComponent(token);
    return url;
  }

  function connect() {
    setStatus("connecting", "connecting…");
    ws = new WebSocket(wsUrl());
    ws.onopen = () => { retryMs = 500; setStatus("open", "live"); };
    ws.onmessage = (msg) => {
      let m;
      try { m = JSON.parse(msg.data); } catch (e) { return; }
      if (!m.stream || !m.data) return; // replies to SUBSCRIBE/UNSUBSCRIBE
      if (m.stream === "!stats@1s") onStats(m.data);
      else if (symbol && m.stream === symbolStreams(symbol)[0]) onBook(m.data);
      else if (symbol && m.stream === symbolStreams(symbol)[1]) onTrade(m.data);
    };
    ws.onclose = (ev) => {
      const why = ev.code + (ev.reason ? " " + ev.reason : "");
      setStatus("closed", "closed (" + why + "); reconnecting");
      // 4008/4009/1001 and network errors alike: come back with backoff, capped at 10 s.
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  function switchSymbol(next) {
    if (next === symbol) return;
    const previous = symbol;
    symbol = next;
    trades.length = 0;
    $("trades").tBodies[0].replaceChildren();
    $("book").tBodies[0].replaceChildren();
    const url = new URL(location.href);
    url.searchParams.set("symbol", next);
    history.replaceState(null, "", url);
    if (!ws || ws.readyState !== WebSocket.OPEN) return; // the next connect() uses `symbol`
    if (previous) ws.send(JSON.stringify({ method: "UNSUBSCRIBE", params: symbolStreams(previous), id: nextId++ }));
    ws.send(JSON.stringify({ method: "SUBSCRIBE", params: symbolStreams(next), id: nextId++ }));
  }

  // Each switch is two control messages; settle first, so scrolling through the list cannot
  // pass the server's 5 messages/s limit (4002).
  let switchTimer = null;
  symbolEl.addEventListener("change", () => {
    clearTimeout(switchTimer);
    switchTimer = setTimeout(() => switchSymbol(symbolEl.value), 400);
  });

  fetch("/api/v3/exchangeInfo")
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error("exchangeInfo: HTTP " + r.status))))
    .then((info) => {
      const names = info.symbols.map((s) => s.symbol);
      for (const name of names) symbolEl.append(new Option(name, name));
      const wanted = (query.get("symbol") || "").toUpperCase();
      symbol = names.includes(wanted) ? wanted : names[0] || null;
      if (symbol) symbolEl.value = symbol;
    })
    .catch(() => { symbol = null; })
    .finally(connect);
})();
