// The browser's own EventSource against bookcast's /sse, in Debian's headless chromium
// (playwright-core). The server is started with a short --max-lifetime, so it ends every event
// stream after a few seconds (a server-side drop); EventSource reconnects by itself, sending
// Last-Event-ID, and the trade ids it receives must run on by exactly one across every
// reconnect: nothing missed, nothing twice. The server's bookcast_resumes_total then shows the
// reconnects were resumed from that id, not started afresh.
//
// usage: node eventsource.mjs BASE_URL
import { chromium } from "playwright-core";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node eventsource.mjs BASE_URL");
  process.exit(2);
}
const DEADLINE_MS = 45_000;
const RECONNECTS = 2;

const resumedCount = async () => {
  const text = await (await fetch(`${base}/metrics`)).text();
  return text.split("\n")
    .filter((l) => l.startsWith('bookcast_resumes_total{outcome="caught_up"}'))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let failed = false;
try {
  const before = await resumedCount();
  const page = await browser.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  // Same origin as /sse: any bookcast page will do.
  await page.goto(`${base}/api/v3/ping`);
  const seen = await page.evaluate(({ reconnects, deadline }) => new Promise((resolve, reject) => {
    const ids = [];
    let opens = 0;
    const source = new EventSource("/sse?streams=btcusdt@trade");
    const timer = setTimeout(() => {
      source.close();
      reject(new Error(`only ${opens} opens and ${ids.length} trades in ${deadline} ms`));
    }, deadline);
    source.onopen = () => { opens += 1; };
    source.addEventListener("btcusdt@trade", (e) => {
      const trade = JSON.parse(e.data);
      if (e.lastEventId !== `btcusdt@trade:${trade.t}`) {
        source.close();
        reject(new Error(`event id ${e.lastEventId} for trade ${trade.t}`));
        return;
      }
      ids.push(trade.t);
      // Done once it has reconnected enough times and seen trades after the last one.
      if (opens > reconnects && ids.length > 5) {
        clearTimeout(timer);
        source.close();
        resolve({ ids, opens });
      }
    });
  }), { reconnects: RECONNECTS, deadline: DEADLINE_MS - 5_000 });
  for (let i = 1; i < seen.ids.length; i++) {
    if (seen.ids[i] !== seen.ids[i - 1] + 1) {
      throw new Error(`trade ${seen.ids[i - 1]} then ${seen.ids[i]}: a gap or a repeat`);
    }
  }
  const resumed = (await resumedCount()) - before;
  if (resumed < RECONNECTS) {
    throw new Error(`the server resumed ${resumed} streams, expected ${RECONNECTS} (Last-Event-ID)`);
  }
  console.log(`EventSource: ${seen.ids.length} trades ${seen.ids[0]}..${seen.ids.at(-1)} over `
    + `${seen.opens} connections, every id once; the server resumed ${resumed} from Last-Event-ID`);
} catch (e) {
  failed = true;
  console.error(`EventSource check failed: ${e.message}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
