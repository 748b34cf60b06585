// Drives the dashboard in headless Chromium (playwright-core, Debian's
// chromium), for spec/dashboard_browser_spec.lua:
//
//   node spec/dashboard_browser.js URL SCREENSHOT_DIR CHROMIUM
//
// Each step prints "ok STEP"; the first failure prints "fail STEP: why"
// and exits 1.  The browser is closed at the end, whatever happens.
"use strict";
const { chromium } = require("playwright-core");

const [url, shots, executablePath] = process.argv.slice(2);
const STEP_MS = 15000;

async function main() {
  const browser = await chromium.launch({ executablePath, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  let step = "load the page";
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(STEP_MS);
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.querySelector("#conn").textContent === "live");
    await page.waitForSelector("#sched-bars .bar");
    if (errors.length) throw new Error(errors.join("; "));
    console.log("ok " + step);

    step = "see the charts";
    await page.waitForSelector("#charts .uplot");
    console.log("ok " + step);

    step = "reload a module from the node view";
    await page.fill("#reload-module", "demo_sup");
    await page.click("#reload-button");
    await page.waitForFunction(() => /^demo_sup: version \d+$/.test(document.querySelector("#reload-result").textContent));
    console.log("ok " + step);

    step = "sort the process table by reductions";
    await page.click("#tab-processes");
    await page.waitForSelector("#proc-table tbody tr");
    await page.click("#proc-table th[data-sort=reductions]");
    await page.waitForSelector("#proc-table th.sorted[data-sort=reductions]");
    const reds = await page.$$eval("#proc-table tbody tr td:nth-child(5)",
      (tds) => tds.map((td) => Number(td.textContent)));
    for (let i = 1; i < reds.length; i++) {
      if (reds[i] > reds[i - 1]) throw new Error("not sorted: " + reds.join(","));
    }
    if (reds.length < 5) throw new Error("too few rows: " + reds.length);
    console.log("ok " + step);

    step = "open the process registered as counter";
    await page.click("#proc-table th[data-sort=pid]");
    await page.waitForSelector("#proc-table th.sorted[data-sort=pid]");
    await page.click("#proc-table tbody tr:has(td:text-is('counter'))");
    await page.waitForSelector("#process-view td:text-is('counter')");
    await page.waitForFunction(() => /count/.test(document.querySelector("#process-state").textContent));
    const pid = await page.$eval("#process-title", (h) => h.textContent.replace("Process ", ""));
    console.log("ok " + step + " " + pid);

    step = "see the function the counter waits in, and its stack";
    const fn = await page.$eval("#process-function", (c) => c.textContent);
    if (!/^moonbeam\/gen_server_loop\.lua:\d+ in function /.test(fn)) throw new Error("function: " + fn);
    const stack = await page.$$eval("#process-stack li", (ls) => ls.map((l) => l.textContent));
    // It waits in the runtime's C loop (mb.gen_serve), below its Lua
    // function.
    if (!stack[0].startsWith("[C] in function ") || !stack.includes(fn)) {
      throw new Error("stack: " + stack.join(" | "));
    }
    console.log("ok " + step);

    step = "trace the counter from its page, see a send, and stop";
    await page.click("#trace-start");
    await page.waitForSelector("#trace-stop:not([hidden])");
    // The page asks the counter for its state: it receives the request
    // and sends the answer.
    await page.evaluate((p) => fetch("/api/state?pid=" + encodeURIComponent(p)), pid);
    await page.waitForSelector("#trace-lines .line:has-text('" + pid + " send ')");
    await page.click("#trace-stop");
    await page.waitForSelector("#trace-lines .line.stopped:has-text('trace stopped: stopped')");
    console.log("ok " + step);

    step = "trace the processes whose names match a pattern, from the process table";
    await page.click("#tab-processes");
    await page.waitForSelector("#view-processes #trace-block #trace-match");
    await page.fill("#trace-match", "^counter$");
    await page.click("#trace-start");
    await page.waitForFunction(() => /^Tracing 1 process$/.test(document.querySelector("#trace-status").textContent));
    await page.evaluate(() => fetch("/api/state?pid=counter"));
    await page.waitForSelector("#trace-lines .line:has-text('" + pid + " receive ')");
    await page.click("#trace-stop");
    await page.waitForSelector("#trace-lines .line.stopped");
    console.log("ok " + step);

    step = "see the supervision tree";
    await page.click("#tab-apps");
    await page.waitForSelector(".tree li[data-id=demo] li[data-id=counter]");
    console.log("ok " + step);

    step = "kill the process, confirmed, and follow the crash in the log";
    await page.goto(url.replace(/#.*$/, "") + "#/process/" + encodeURIComponent(pid));
    await page.waitForSelector("#process-view td:text-is('counter')");
    page.once("dialog", (d) => d.accept());
    await page.click("#kill-button");
    await page.click("#tab-log");
    await page.selectOption("#log-level", "error");
    await page.waitForSelector("#log-lines .line.error:has-text('counter')");
    const shown = await page.$$eval("#log-lines .line", (ls) => ls.map((l) => l.dataset.level));
    if (shown.some((l) => l !== "error")) throw new Error("levels shown: " + shown.join(","));
    console.log("ok " + step);

    step = "take a screenshot";
    await page.screenshot({ path: shots + "/dashboard.png", fullPage: true });
    console.log("ok " + step);
  } catch (e) {
    console.log("fail " + step + ": " + (e && e.message ? e.message.split("\n")[0] : e));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.log("fail start the browser: " + e.message); process.exit(1); });
