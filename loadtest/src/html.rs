//! `--html`: a self-contained report page. uPlot (vendored, MIT) and the report's JSON are
//! embedded, so the file opens anywhere with no network.

use crate::report::Report;

const UPLOT_JS: &str = include_str!("../../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../vendor/uplot/uPlot.min.css");

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bookcast-load report</title>
<style>/*UPLOT_CSS*/
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #eee}
th{text-align:left;font-weight:600}.bar{background:#4a7fd4;height:12px;display:inline-block}
.note{color:#666}</style></head><body>
<h1>bookcast-load report</h1>
<table id="summary"></table>
<h2>Latency percentiles over time (µs, log scale)</h2><div id="latency"></div>
<h2>Delivered events per second, and connected clients</h2><div id="rate"></div>
<h2>Latency distribution (µs by percentile)</h2><div id="distribution"></div>
<h2>Close codes</h2><table id="closes"></table>
<p class="note">Latency = receive time − event time E (µs). Slow clients are included in the overall
percentiles and excluded from the fast ones.</p>
<script>/*UPLOT_JS*/</script>
<script>
const R = /*REPORT*/;
const W = Math.min(1050, window.innerWidth - 48);
const rows = [["clients", R.clients], ["connected (peak)", R.connected], ["duration (s)", R.duration_s.toFixed(1)],
  ["events", R.events], ["events/s", Math.round(R.events_per_s)], ["bytes/s", Math.round(R.bytes_per_s)],
  ["gaps", R.gaps], ["latency p50 / p99 / p99.9 / max (µs)", [R.latency_us.p50, R.latency_us.p99, R.latency_us.p999, R.latency_us.max].join(" / ")],
  ["fast clients p50 / p99 / p99.9 / max (µs)", [R.fast_latency_us.p50, R.fast_latency_us.p99, R.fast_latency_us.p999, R.fast_latency_us.max].join(" / ")],
  ["slow clients (closed with 4008)", R.slow_clients + " (" + R.slow_closed + ")"]];
document.getElementById("summary").innerHTML = rows.map(r => "<tr><th>" + r[0] + "</th><td>" + r[1] + "</td></tr>").join("");
const t = R.timeline.map(s => s.t_s);
const pos = v => Math.max(1, v);
new uPlot({width: W, height: 300, scales: {x: {time: false}, y: {distr: 3}},
  axes: [{label: "s"}, {label: "µs"}],
  series: [{label: "t"}, {label: "p50", stroke: "#2a9d8f"}, {label: "p90", stroke: "#e9c46a"},
           {label: "p99", stroke: "#f4a261"}, {label: "p99.9", stroke: "#e76f51"}]},
  [t, R.timeline.map(s => pos(s.latency_us.p50)), R.timeline.map(s => pos(s.latency_us.p90)),
   R.timeline.map(s => pos(s.latency_us.p99)), R.timeline.map(s => pos(s.latency_us.p999))],
  document.getElementById("latency"));
new uPlot({width: W, height: 260, scales: {x: {time: false}, c: {}},
  axes: [{label: "s"}, {label: "events/s"}, {side: 1, scale: "c", label: "connected", grid: {show: false}}],
  series: [{label: "t"}, {label: "events/s", stroke: "#4a7fd4"}, {label: "connected", stroke: "#999", scale: "c"}]},
  [t, R.timeline.map(s => s.events_per_s), R.timeline.map(s => s.connected)],
  document.getElementById("rate"));
// HdrHistogram-style percentile plot: x = 1/(1-p), log scale.
const d = R.latency_distribution.filter(p => p[0] < 100);
new uPlot({width: W, height: 300, scales: {x: {time: false, distr: 3, range: [1, 1e6]}, y: {distr: 3}},
  axes: [{label: "percentile", splits: () => [1, 10, 100, 1e3, 1e4, 1e5, 1e6],
          values: (u, vals) => vals.map(v => ({1: "0%", 10: "90%", 100: "99%", 1000: "99.9%", 10000: "99.99%",
                                              100000: "99.999%", 1000000: "99.9999%"})[Math.round(v)] || "")},
         {label: "µs"}],
  series: [{label: "1/(1-p)"}, {label: "latency", stroke: "#e76f51", points: {show: true}}]},
  [d.map(p => 1 / (1 - p[0] / 100)), d.map(p => pos(p[1]))],
  document.getElementById("distribution"));
const closes = Object.entries(R.closes);
const most = Math.max(1, ...closes.map(c => c[1]));
document.getElementById("closes").innerHTML = "<tr><th>code</th><th>count</th><th></th></tr>" +
  closes.map(c => "<tr><th>" + c[0] + "</th><td>" + c[1] + "</td><td style=\"text-align:left\"><span class=\"bar\" style=\"width:" +
  Math.round(300 * c[1] / most) + "px\"></span></td></tr>").join("");
</script></body></html>
"##;

/// The report page for `report`.
pub fn render(report: &Report) -> Result<String, String> {
    // `</` inside the embedded JSON must not end the script element.
    let json = serde_json::to_string(report)
        .map_err(|e| e.to_string())?
        .replace("</", "<\\/");
    Ok(PAGE
        .replacen("/*UPLOT_CSS*/", UPLOT_CSS, 1)
        .replacen("/*UPLOT_JS*/", UPLOT_JS, 1)
        .replacen("/*REPORT*/", &json, 1))
}
