// Browser test of the web console (run by tests/web_console.rs; see README "Web console").
// Debian's Chromium, driven by playwright-core; no browser is downloaded.
//
// Environment: BASE (http://127.0.0.1:PORT), OUT (screenshot directory), MODE (`quickstart`
// or `failing`), CONFIG_DIR (the config repo, a Git work tree: the live-update check commits
// a new request there), CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.BASE;
const out = process.env.OUT;
const mode = process.env.MODE;
const configDir = process.env.CONFIG_DIR;
mkdirSync(out, { recursive: true });

function check(cond, what) {
  if (!cond) {
    throw new Error("check failed: " + what);
  }
  console.log("ok: " + what);
}

// A fresh profile directory each run.
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "promised-chromium-")), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = browser.pages()[0] || await browser.newPage();
page.setDefaultTimeout(20000);
const shot = async (name) => page.screenshot({ path: join(out, name + ".png"), fullPage: true });
// Network only to the console: anything else is a bug (no external assets).
const outside = [];
page.on("request", (r) => {
  if (!r.url().startsWith(base)) {
    outside.push(r.url());
  }
});

try {
  if (mode === "quickstart") {
    await page.goto(base + "/ui/");
    check((await page.title()).includes("Overview"), "overview loads");
    const counts = await page.textContent("#counts");
    check(/3\s*reconciled/.test(counts), "three requests reconciled: " + counts);
    check((await page.textContent("#destinations")).includes("prod"), "Destinations listed");
    check((await page.textContent("#state-stores")).includes("GitStateStore/local"), "state store listed");
    check((await page.textContent("#last-pass")).includes("Pipelines run"), "last pass shown");
    check(await page.locator("#attention").count() === 0, "nothing needs attention");
    await shot("overview");

    // Request page: Destination, path, state store commit.
    await page.click("#requests a:text('redis/default/example')");
    await page.waitForURL("**/ui/requests/redis/default/example");
    const placements = await page.textContent("#placements");
    check(placements.includes("dev"), "request page names its Destination: " + placements);
    check(/clusters\/dev\//.test(placements), "request page shows the path");
    const sha = await page.getAttribute("#placements code[title]", "title");
    check(/^[0-9a-f]{40}$/.test(sha), "request page shows the state store commit " + sha);
    check((await page.textContent("#logs")).includes("instance-configure") ||
      (await page.textContent("#logs")).includes("exit"), "request page shows the last run's log");
    await shot("request");

    // Its Promise page: the API as a table.
    await page.click("a:text('Promise redis')");
    await page.waitForURL("**/ui/promises/redis");
    check((await page.textContent("table.api")).includes("spec."), "Promise API table");
    check((await page.textContent("#requests")).includes("redis/default/example"), "Promise lists its requests");
    await shot("promise");

    // Audit: the output commit links back to its config commit.
    await page.goto(base + "/ui/requests/redis/default/example");
    await page.click("#placements a:text('audit')");
    await page.waitForURL("**/ui/audit#out-" + sha);
    const row = page.locator("#out-" + sha);
    check(await row.count() === 1, "audit lists the output commit");
    check((await row.textContent()).includes("Promised-Resource: redis/default/example"), "with its trailers");
    const back = await row.locator("a[href^='#config-']").getAttribute("href");
    check(await page.locator(back).count() === 1, "linked to its config commit " + back);
    await page.click("#out-" + sha + " a:text('redis/default/example')");
    await page.waitForURL("**/ui/requests/redis/default/example");
    check(true, "the audit links to the request");
    await page.goto(base + "/ui/audit");
    await shot("audit");

    // Live: a config commit adds a request; the overview shows it without a reload.
    await page.goto(base + "/ui/");
    await page.evaluate(() => { window.__sameDocument = true; });
    writeFileSync(join(configDir, "requests", "team-live.yaml"),
      "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-live\n  namespace: default\nspec:\n  namespaceName: team-live\n");
    execFileSync("git", ["add", "-A"], { cwd: configDir });
    execFileSync("git", ["-c", "user.name=Test", "-c", "user.email=test@example.com", "commit", "-qm", "request team-live"], { cwd: configDir });
    await page.waitForFunction(
      () => /4\s*reconciled/.test(document.querySelector("#counts").textContent),
      null, { timeout: 90000 });
    check(await page.evaluate(() => window.__sameDocument === true), "updated without a reload");
    check((await page.textContent("#requests")).includes("namespace/default/team-live"), "the new request is listed");
    check((await page.textContent("#last-pass")).includes("team-live"), "the last pass ran it");
    await shot("overview-live");
  } else if (mode === "failing") {
    await page.goto(base + "/ui/");
    const first = page.locator("#attention .item").first();
    check(await first.getAttribute("data-kind") === "failedRequest", "a failed request needs attention first");
    const text = await first.textContent();
    check(text.includes("flaky/default/broken"), "the failed request is named: " + text);
    check(text.includes("storage quota exhausted for broken"), "with its log tail");
    const firstRow = await page.getAttribute("#requests tbody tr", "data-key");
    check(firstRow === "flaky/default/broken", "the failed request is listed first: " + firstRow);
    check(/1\s*failed/.test(await page.textContent("#counts")), "one failed request counted");
    await shot("overview-failing");

    await first.locator("a").first().click();
    await page.waitForURL("**/ui/requests/flaky/default/broken");
    check((await page.textContent("h1")).includes("Failing"), "request page says Failing");
    const logs = await page.textContent("#logs");
    check(logs.includes("error: storage quota exhausted for broken") && logs.includes("connecting to the quota service"),
      "request page shows the log tail: " + logs);
    check((await page.textContent("#events")).includes("ConfigureWorkflowFailed") ||
      (await page.textContent("#events")).includes("Failed"), "events listed");
    await shot("request-failing");

    // The filter keeps only failed requests, and the JSON twin agrees.
    await page.goto(base + "/ui/?state=failed");
    check(await page.locator("#requests tbody tr[data-key]").count() === 1, "filter: failed only");
    const json = await (await page.request.get(base + "/api/v1/console/overview")).json();
    check(json.attention[0].kind === "failedRequest" && json.counts.failed === 1, "JSON twin agrees");

    await page.goto(base + "/ui/promises/flaky");
    check((await page.textContent("table.api")).includes("spec.quota"), "Promise API lists spec.quota");
    check((await page.textContent("table.api")).includes("Storage quota in GiB."), "with its description");
    await shot("promise-failing");
  } else {
    throw new Error("MODE must be quickstart or failing");
  }
  check(outside.length === 0, "no request outside the console: " + outside.join(", "));
} finally {
  await browser.close();
}
console.log("all checks passed");
