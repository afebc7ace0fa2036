// Loads bookcast's /dashboard in Debian's headless chromium (playwright-core), waits until the
// charts hold data and the numbers move, switches the order-book symbol, and saves a
// screenshot. Fails on any console error, page error, failed request or HTTP error.
//
// usage: node dashboard.mjs BASE_URL SCREENSHOT_PATH
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT_PATH");
  process.exit(2);
}
const DEADLINE_MS = 30_000;
const problems = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  page.setDefaultTimeout(DEADLINE_MS);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });

  await page.goto(`${base}/dashboard?symbol=BTCUSDT`);
  const check = () => { if (problems.length) throw new Error(problems.join("\n")); };

  // Charts with at least three seconds of data, every tile filled, a book and some trades.
  await page.waitForFunction(() => {
    const points = [...document.querySelectorAll("[data-points]")].map((e) => Number(e.dataset.points));
    return points.length === 3 && points.every((n) => n >= 3)
      && document.querySelectorAll("#latency-chart canvas, #rate-chart canvas, #slow-chart canvas").length === 3
      && [...document.querySelectorAll(".tile .value")].every((e) => e.textContent !== "–")
      && document.querySelectorAll("#book tbody td.bid").length > 0
      && document.querySelector("#book tbody td.bid").textContent !== ""
      && document.querySelectorAll("#trades tbody tr").length > 0;
  });
  check();
  const read = () => page.evaluate(() => ({
    samples: Number(document.body.dataset.samples),
    frames: document.getElementById("frames").textContent,
    p99: document.getElementById("p99").textContent,
    connections: document.getElementById("connections").textContent,
    book: document.querySelector("#book tbody").dataset.update,
    status: document.getElementById("status").textContent,
  }));
  const first = await read();
  console.log("first:", JSON.stringify(first));
  if (first.status !== "live") throw new Error(`status shows "${first.status}"`);

  // The numbers change: two more stats samples arrive and both the delivery rate (or p99) and
  // the order book move.
  await page.waitForFunction((f) => {
    const samples = Number(document.body.dataset.samples);
    const frames = document.getElementById("frames").textContent;
    const p99 = document.getElementById("p99").textContent;
    const book = document.querySelector("#book tbody").dataset.update;
    return samples >= f.samples + 2 && (frames !== f.frames || p99 !== f.p99) && book !== f.book;
  }, first);
  const second = await read();
  console.log("second:", JSON.stringify(second));
  check();

  // Pick another symbol: the book and trades follow it (UNSUBSCRIBE + SUBSCRIBE on the socket).
  const other = await page.evaluate(() => {
    const options = [...document.querySelectorAll("#symbol option")].map((o) => o.value);
    return options.find((s) => s !== "BTCUSDT");
  });
  if (!other) throw new Error("the symbol picker lists only one symbol");
  await page.selectOption("#symbol", other);
  await page.waitForFunction((sym) => {
    const body = document.querySelector("#book tbody");
    return body.dataset.symbol === sym && body.querySelector("td.bid")?.textContent;
  }, other);
  if (!page.url().includes(`symbol=${other}`)) throw new Error(`URL does not name ${other}: ${page.url()}`);
  console.log(`switched the book to ${other}`);
  // One more sample after the switch, then the picture.
  await page.waitForFunction((n) => Number(document.body.dataset.samples) > n, second.samples);
  check();

  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
} catch (e) {
  failed = true;
  console.error(`dashboard check failed: ${e.message}`);
  for (const p of problems) console.error(`  ${p}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
