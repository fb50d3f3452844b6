// Drives Debian's chromium (headless, through playwright-core) against a
// running dropk-serve: types a prompt, watches the completion stream in,
// checks that the same seed gives the same text (and the text the API gives
// any other client), the API key, the side-by-side mode, and takes a
// screenshot. Usage: node playground.test.mjs URL API_KEY SCREENSHOT.png
// Exits 0 when every check passes, 1 with the failed check otherwise.
import { chromium } from "playwright-core";

const [url, apiKey, screenshot] = process.argv.slice(2);
const checks = [];
function check(ok, what) {
  checks.push(what);
  if (!ok) throw new Error("FAILED: " + what);
  console.log("ok   " + what);
}

// Flags the machine needs: no sandbox as root, no background traffic on a closed network.
const browser = await chromium.launch({
  executablePath: process.env.DROPK_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const failedRequests = [];
  page.on("requestfailed", (r) => failedRequests.push(r.url()));
  await page.goto(url);
  check((await page.title()) === "dropk playground", "the page loads at / with its title");

  // Generates with the current controls; returns {text, meta, chunks}.
  async function generate(pane = "a") {
    await page.evaluate((p) => {
      const out = document.getElementById("out-" + p);
      window.__chunks = 0;
      window.__observer?.disconnect();
      window.__observer = new MutationObserver((ms) => { window.__chunks += ms.length; });
      window.__observer.observe(out, { characterData: true, subtree: true, childList: true });
    }, pane);
    await page.click("#generate");
    await page.waitForFunction(() => !document.getElementById("generate").disabled &&
                               (document.getElementById("out-a").dataset.done === "1" ||
                                document.getElementById("error").textContent !== ""),
                               null, { timeout: 30000 });
    return page.evaluate((p) => ({
      text: document.getElementById("out-" + p).textContent,
      meta: document.getElementById("meta-" + p).textContent,
      error: document.getElementById("error").textContent,
      chunks: window.__chunks,
    }), pane);
  }

  await page.fill("#prompt", "ROMEO:");
  await page.fill("#seed", "7");
  await page.fill("#top_k", "5");
  await page.fill("#max_tokens", "120");
  const refused = await generate();
  check(/HTTP 401/.test(refused.error), "without the API key the page shows the server's 401: " + refused.error);

  await page.fill("#api_key", apiKey);
  await page.dispatchEvent("#api_key", "change");
  await page.waitForFunction(() => /dropk-step-/.test(document.getElementById("model").textContent));
  check(true, "with the key the page names the served model");

  const first = await generate();
  check(first.error === "", "no error: " + first.error);
  check(first.text.startsWith("ROMEO:") && first.text.length > "ROMEO:".length + 20,
        "the completion follows the prompt: " + JSON.stringify(first.text.slice(0, 60)));
  check(first.chunks > 2, `the completion streamed in (${first.chunks} updates)`);
  check(/seed 7/.test(first.meta) && /checkpoint step \d+/.test(first.meta),
        "the seed used and the checkpoint step are shown: " + first.meta);

  const second = await generate();
  check(second.text === first.text, "the same seed gives the same text");

  // The page shows exactly what any other client of the API gets.
  const api = await (await fetch(new URL("/v1/completions", url), {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + apiKey },
    body: JSON.stringify({ prompt: "ROMEO:", max_tokens: 120, temperature: 0.8, top_p: 1, top_k: 5, seed: 7 }),
  })).json();
  check("ROMEO:" + api.choices[0].text === first.text, "the API returns the same text for the same request");

  await page.fill("#seed", "");
  const fresh = await generate();
  check(!/seed 7\b/.test(fresh.meta) && /seed \d+/.test(fresh.meta), "an empty seed draws a new one and shows it: " + fresh.meta);
  await page.click("#reuse");
  const reused = await page.inputValue("#seed");
  check(fresh.meta.includes("seed " + reused), "'Reuse seed' puts the shown seed back: " + reused);

  await page.fill("#seed", "11");
  await page.check("#compare");
  await generate();
  await page.waitForFunction(() => document.getElementById("out-b").dataset.done === "1", null, { timeout: 30000 });
  const panes = await page.evaluate(() => ["a", "b"].map((p) => ({
    visible: !document.getElementById("pane-" + p).hidden,
    text: document.getElementById("out-" + p).textContent,
    meta: document.getElementById("meta-" + p).textContent,
  })));
  check(panes.every((p) => p.visible && p.text.length > 20), "side by side: both panes stream a completion");
  check(/top-k 1 /.test(panes[0].meta) && /top-k 40 /.test(panes[1].meta) &&
        panes.every((p) => /seed 11/.test(p.meta)), "side by side: k = 1 and k = 40 with one seed");
  check(failedRequests.length === 0, "nothing failed to load: " + failedRequests.join(", "));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`playground: ${checks.length} checks passed`);
} catch (e) {
  console.error(e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
