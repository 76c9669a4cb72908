// Browser end-to-end test of the sonde web UI (run by tests/tests/web_ui.rs,
// which starts the collector, the agent and the target namespace).
//
// Checks, in a real headless Chromium driven by Playwright:
//  1. without a client certificate the page is refused during TLS;
//  2. the viewer (certificate imported from the PKCS#12 bundle) sees the
//     grid of acme's 198.18.90.0/24 with coloured live cells (.1–.20 up,
//     .21–.30 down, .200 not monitored), the CSP and framing headers, no
//     console error (a CSP violation would be one); globex's
//     198.18.91.0/24 is absent and its URL answers 403 (page and API);
//  3. cells update: 198.18.90.7 is cut in the namespace and turns `down`;
//  4. keyboard: arrow keys move through the grid, Enter opens the address;
//     the detail shows the 60-minute timeline, 24 h history in 5-minute
//     groups and the moving averages; the table view lists the address;
//     the state and prefix filters and the address search work;
//  5. replay: the slider (keyboard) goes back to the minute before the cut
//     (.7 was up then) and to 24 h ago (no data), and back to live;
//  6. the agents (and one agent's facts), outages, events and alerts pages
//     render for the viewer; alerts offer no silence form to a viewer;
//  7. the viewer's targets page is read-only; the admin (PEM certificate)
//     gets a clear error for another tenant's address, adds 198.18.90.40
//     through the form, and within seconds it is a live coloured cell;
//     then disables and deletes it, and creates and expires a silence;
//     adds a heartbeat check, is shown its ping URL once, pings it (up,
//     the ping log shows the body); the viewer's checks page is read-only;
//     sets and clears an agent's grace on the agent page;
//  8. 1280×720 and 3840×2160 render all 256 cells; screenshots go to OUT_DIR.

import { execSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const URL = process.env.SONDE_URL;
const OUT = process.env.OUT_DIR;
const PREFIX = '198.18.90.0/24';
const OTHER = '198.18.91.0/24';
const grid = `.grid[data-prefix="${PREFIX}"]`;
const cell = (i) => `${grid} .c[data-i="${i}"]`;
const COLOURED = 'r[0-6]';

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

async function waitClass(page, sel, re, what, timeout = 30000) {
  try {
    await page.waitForFunction(([s, r]) => {
      const e = document.querySelector(s);
      return e && new RegExp(`\\b(${r})\\b`).test(e.className);
    }, [sel, re], { timeout });
  } catch (e) {
    const now = await page.$eval(sel, (x) => x.className).catch(() => 'absent');
    throw new Error(`FAILED: ${what} (class now "${now}"): ${e.message}`);
  }
  console.log(`ok - ${what}`);
}

const classOf = (page, sel) => page.$eval(sel, (e) => e.className);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const results = {};
try {
  // 1. No certificate: refused at TLS (server certificate errors ignored,
  // so the only thing missing is the client certificate).
  {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await ctx.newPage();
    let error = null;
    let status = null;
    try {
      const r = await page.goto(URL, { timeout: 15000 });
      status = r && r.status();
    } catch (e) { error = e.message; }
    check(error !== null && /net::ERR_(BAD_SSL_CLIENT_AUTH_CERT|SSL_PROTOCOL_ERROR|SOCKET_NOT_CONNECTED|CONNECTION_(RESET|CLOSED))/.test(error),
      `no client certificate: refused during the TLS handshake (${error ? error.split('\n')[0] : `HTTP ${status}`})`);
    await ctx.close();
  }

  // 2. The viewer, from the PKCS#12 bundle.
  const viewer = await browser.newContext({
    viewport: { width: 1280, height: 720 },
    clientCertificates: [{ origin: URL, pfxPath: process.env.VIEWER_PFX, passphrase: process.env.VIEWER_PASS }],
  });
  const page = await viewer.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(e.message));
  const res = await page.goto(URL);
  check(res.status() === 200, `viewer: the page loads (HTTP ${res.status()})`);
  const h = res.headers();
  check(/script-src 'self'/.test(h['content-security-policy'] || '') && /frame-ancestors 'none'/.test(h['content-security-policy']),
    `strict Content-Security-Policy: ${h['content-security-policy']}`);
  check(h['x-frame-options'] === 'DENY' && h['x-content-type-options'] === 'nosniff', 'X-Frame-Options DENY, nosniff');
  const html = await (await viewer.request.get(URL)).text();
  check(!/<script(?![^>]*\bsrc=)[^>]*>/.test(html) && !/\sstyle=/.test(html), 'no inline script or style in the page');
  await page.waitForSelector(grid, { timeout: 20000 });
  await waitClass(page, cell(7), COLOURED, '198.18.90.7 is a coloured live cell');
  await waitClass(page, cell(25), 'down', '198.18.90.25 (no answer) is down');
  const coloured = await page.$$eval(`${grid} .c`, (cs) => cs.filter((c) => /\br[0-6]\b/.test(c.className)).length);
  check(coloured >= 18, `${coloured} of the 20 answering addresses are coloured by RTT`);
  check(await classOf(page, cell(200)) === 'c', '198.18.90.200 is shown as not monitored');
  // Each state is painted in its own colour (a CSS mistake would leave a
  // cell transparent).
  const bg = (i) => page.$eval(cell(i), (c) => getComputedStyle(c).backgroundColor);
  const [up, down, none] = [await bg(7), await bg(25), await bg(200)];
  check(up !== down && !/rgba\(0, 0, 0, 0\)/.test(up) && !/rgba\(0, 0, 0, 0\)/.test(down) && /rgba\(0, 0, 0, 0\)/.test(none),
    `up ${up}, down ${down}, not monitored ${none}`);
  check(await page.locator(`.grid[data-prefix="${OTHER}"]`).count() === 0, `globex's ${OTHER} is not on acme's page`);
  const legend = await page.locator('.legend').innerText();
  check(/< 1 ms/.test(legend) && /down/.test(legend) && /not monitored/.test(legend), 'legend explains colours in words');
  await page.screenshot({ path: `${OUT}/grids-1280x720.png` });
  const forbidden = await viewer.newPage();
  const r403 = await forbidden.goto(`${URL}/prefixes/${OTHER}`);
  check(r403.status() === 403, `${URL}/prefixes/${OTHER} answers ${r403.status()}`);
  const body403 = await forbidden.locator('body').innerText();
  check(!body403.includes('198.18.91.5'), '403 page reveals nothing of the prefix');
  const api403 = await viewer.request.get(`${URL}/api/v1/prefixes/${OTHER}`);
  check(api403.status() === 403, `API for ${OTHER} answers ${api403.status()}`);
  await forbidden.close();

  // 3. Cells update: cut .7 in the namespace.
  // First let one complete minute with .7 up pass, for the replay below.
  const before = Math.floor(Date.now() / 60000);
  const wait = (before + 1) * 60000 + 2000 - Date.now();
  console.log(`waiting ${Math.round(wait / 1000)} s for minute ${new Date(before * 60000).toISOString()} to complete`);
  await page.waitForTimeout(wait);
  const framesBefore = await page.evaluate(() => window.sondeStats.frames);
  const cutAt = Date.now();
  execSync(process.env.CUT_CMD, { stdio: 'inherit', shell: '/bin/bash' });
  await waitClass(page, cell(7), 'down|lossy', '198.18.90.7 changes colour after the cut (pushed, no reload)');
  await waitClass(page, cell(7), 'down', '198.18.90.7 is down');
  results.cut_to_down_s = (Date.now() - cutAt) / 1000;
  const framesAfter = await page.evaluate(() => window.sondeStats.frames);
  check(framesAfter > framesBefore, `live frames kept arriving (${framesAfter - framesBefore} during the cut)`);
  await page.locator(grid).screenshot({ path: `${OUT}/cell-down.png` });

  // 4. Keyboard: first cell, → ×7, Enter.
  await page.locator(cell(0)).focus();
  for (let i = 0; i < 7; i += 1) await page.keyboard.press('ArrowRight');
  check(await page.evaluate(() => document.activeElement.dataset.i) === '7', 'arrow keys move the focus through the grid');
  const tip = await page.locator('#tip').innerText();
  check(tip.includes('198.18.90.7') && /down/.test(tip), `focused cell has a text alternative: ${JSON.stringify(tip)}`);
  await page.keyboard.press('Enter');
  await page.waitForURL(`${URL}/address/198.18.90.7`);
  await page.waitForSelector('.series .timeline svg', { timeout: 15000 });
  const detail = await page.locator('main').innerText();
  check(/Last 60 minutes/.test(detail) && /24 hours, grouped by/.test(detail) && /Moving averages/.test(detail),
    'address detail: 60-minute timeline, 24 h history, moving averages');
  const bars = await page.locator('.series .timeline svg rect').count();
  check(bars > 0, `timeline has ${bars} bars`);
  const hourly = page.waitForResponse((r) => r.url().includes('step=1h') && r.status() === 200);
  await page.selectOption('.series select', '1h');
  await hourly;
  await page.screenshot({ path: `${OUT}/address-detail.png`, fullPage: true });
  await page.goBack();
  await page.waitForSelector(cell(7));
  await page.click('#f-view');
  await page.waitForSelector('#table-view table');
  const rows = await page.locator('#table-view').innerText();
  check(rows.includes('198.18.90.7') && rows.includes('down'), 'table view lists 198.18.90.7 as down');
  await page.click('#f-view');
  // Filters and search.
  await page.selectOption('#f-state', '3');
  check(/\bdim\b/.test(await classOf(page, cell(1))) && !/\bdim\b/.test(await classOf(page, cell(7))),
    'state filter "down" dims the up cells, not the down one');
  await page.selectOption('#f-state', '');
  await page.fill('#f-prefix', '198.18.99.');
  check(await page.locator(`${grid}.hidden`).count() === 1, 'prefix filter hides a non-matching grid');
  await page.fill('#f-prefix', '');
  await page.fill('#f-search', '198.18.90.12');
  await page.press('#f-search', 'Enter');
  check(/\bfound\b/.test(await classOf(page, cell(12))) && await page.evaluate(() => document.activeElement.dataset.i) === '12'
    && /198\.18\.90\.12: up/.test(await page.locator('#search-result').innerText()), 'search finds, marks and focuses 198.18.90.12');

  // 5. Replay: back to the minute before the cut, by keyboard.
  const minutesAgo = Math.floor(Date.now() / 60000) - before;
  await page.locator('#replay').focus();
  for (let i = 0; i < minutesAgo; i += 1) await page.keyboard.press('ArrowLeft');
  await page.waitForFunction((at) => document.querySelector('#grids').dataset.replayAt === String(at), before * 60000, { timeout: 10000 });
  await waitClass(page, cell(7), COLOURED, `replay of ${new Date(before * 60000).toISOString()}: 198.18.90.7 was up`, 5000);
  check(/replay/.test(await page.locator('#conn').innerText()), 'the page says it is replaying');
  await page.screenshot({ path: `${OUT}/replay.png` });
  await page.keyboard.press('Home'); // 24 h ago: before the agent ran
  await page.waitForFunction(() => {
    const at = Number(document.querySelector('#grids').dataset.replayAt);
    return at && Date.now() - at > 23 * 3600 * 1000;
  }, null, { timeout: 10000 });
  const old = await page.$$eval(`${grid} .c`, (cs) => cs.filter((c) => /\br[0-6]\b/.test(c.className)).length);
  check(old === 0, `replay of 24 h ago: no coloured cell (${old})`);
  await page.click('#replay-live');
  await waitClass(page, cell(7), 'down', 'back to live: 198.18.90.7 down again', 5000);
  check(problems.length === 0, `no console error or CSP violation (${problems.join(' | ')})`);

  // 6. The other pages, as the viewer.
  await page.click('nav a[data-page=agents]');
  await page.waitForSelector('main table a[href^="/agents/a1"]');
  await page.click('main table a[href^="/agents/a1"]');
  await page.waitForSelector('main h2:has-text("Listening ports")');
  const agentText = await page.locator('main').innerText();
  check(/CPU busy/.test(agentText) && /Memory used/.test(agentText) && /Last heartbeat/.test(agentText) && /a1/.test(agentText),
    'agent page: state, last heartbeat, CPU and memory');
  await page.screenshot({ path: `${OUT}/agent.png`, fullPage: true });
  await page.click('nav a[data-page=outages]');
  await page.waitForFunction(() => /198\.18\.90\./.test(document.querySelector('main').innerText), null, { timeout: 30000 });
  check(true, 'outages page lists the namespace outages');
  await page.click('nav a[data-page=events]');
  await page.waitForFunction(() => /outage-start/.test(document.querySelector('main').innerText), null, { timeout: 10000 });
  check(true, 'events page lists outage-start (newest first)');
  await page.click('nav a[data-page=alerts]');
  await page.waitForSelector('main h2:has-text("Silences")');
  check(/needs an admin certificate/.test(await page.locator('main').innerText()), 'alerts page: viewer cannot create silences');
  check(problems.length === 0, `no console error on the other pages (${problems.join(' | ')})`);

  // 7. Targets: viewer read-only; admin adds one.
  await page.goto(`${URL}/targets`);
  await page.waitForSelector('main table');
  check(await page.locator('#target-form').count() === 0 && /Read-only/.test(await page.locator('main').innerText()),
    'viewer: targets page is read-only');
  const denied = await viewer.request.post(`${URL}/api/v1/targets`, { data: { name: 'x', target: '198.18.90.41', kind: 'ping' } });
  check(denied.status() === 403, `viewer's POST /api/v1/targets answers ${denied.status()}`);

  const adminCtx = await browser.newContext({
    viewport: { width: 1280, height: 720 },
    clientCertificates: [{ origin: URL, certPath: process.env.ADMIN_CERT, keyPath: process.env.ADMIN_KEY }],
  });
  const admin = await adminCtx.newPage();
  admin.on('pageerror', (e) => problems.push(e.message));
  await admin.goto(`${URL}/targets`);
  await admin.waitForSelector('#target-form');
  await admin.fill('#target-form input[name=name]', 'globex box');
  await admin.fill('#target-form input[name=target]', '198.18.91.5');
  await admin.click('#target-form button[type=submit]');
  await admin.waitForFunction(() => /not inside a prefix granted/.test(document.querySelector('#target-form-msg').textContent), null, { timeout: 5000 });
  check(true, `clear validation message: ${await admin.locator('#target-form-msg').innerText()}`);
  await admin.fill('#target-form input[name=name]', 'new host');
  await admin.fill('#target-form input[name=target]', '198.18.90.40');
  await admin.fill('#target-form input[name=interval]', '1s');
  const addedAt = Date.now();
  await admin.click('#target-form button[type=submit]');
  await admin.waitForFunction(() => document.querySelector('main').innerText.includes('198.18.90.40'), null, { timeout: 5000 });
  check(true, 'the new target is listed');
  await admin.goto(URL);
  await admin.waitForSelector(grid);
  await waitClass(admin, cell(40), COLOURED, '198.18.90.40 became a live coloured cell', 20000);
  results.added_to_live_s = (Date.now() - addedAt) / 1000;
  await admin.screenshot({ path: `${OUT}/target-added.png` });
  // Disable, then delete, through the table's buttons.
  await admin.goto(`${URL}/targets`);
  await admin.waitForSelector('main table button:has-text("Disable")');
  await admin.click('main table button:has-text("Disable")');
  await admin.waitForSelector('main table .state.disabled', { timeout: 5000 });
  check(true, 'the admin disabled the target');
  admin.once('dialog', (d) => d.accept());
  await admin.click('main table button:has-text("Delete")');
  await admin.waitForFunction(() => {
    const t = document.querySelector('main table');
    return t && !t.innerText.includes('198.18.90.40');
  }, null, { timeout: 5000 });
  check(true, 'the admin deleted the target');
  // A silence, created and expired through the alerts page.
  await admin.goto(`${URL}/alerts`);
  await admin.fill('form.edit input[name=matchers]', 'agent=a1 rule=outage');
  await admin.fill('form.edit input[name=comment]', 'browser test maintenance');
  await admin.click('form.edit button[type=submit]');
  await admin.waitForFunction(() => /browser test maintenance/.test(document.querySelector('main').innerText), null, { timeout: 5000 });
  check(/agent=a1 rule=outage/.test(await admin.locator('main').innerText()), 'the admin created a silence');
  await admin.click('main table button:has-text("Expire")');
  await admin.waitForFunction(() => /Resolved/.test(document.querySelector('main').innerText)
    && ![...document.querySelectorAll('main button')].some((b) => b.textContent === 'Expire'), null, { timeout: 5000 });
  check(true, 'the admin expired it');
  // Checks: the admin adds one and is shown its ping URL once; a ping
  // makes it up; its ping log shows the body; the viewer only reads.
  await admin.goto(`${URL}/checks`);
  await admin.waitForSelector('#check-form');
  await admin.fill('#check-form input[name=name]', 'browser job');
  await admin.fill('#check-form input[name=period]', '1h');
  await admin.click('#check-form button[type=submit]');
  await admin.waitForSelector('#check-url code.url');
  const pingUrl = await admin.locator('#check-url code.url').innerText();
  check(/^https:\/\/localhost:\d+\/ping\/[0-9a-f-]{36}$/.test(pingUrl), `the ping URL is shown once: ${pingUrl}`);
  const pinged = await adminCtx.request.post(pingUrl, { data: 'hello from the browser test' });
  check(pinged.status() === 200 && (await pinged.text()) === 'OK', `pinging it answers ${pinged.status()}`);
  await admin.goto(`${URL}/checks`);
  await admin.waitForSelector('main table .state.up');
  check(await admin.locator('#check-url').count() === 0, 'the check is up and its URL is not shown again');
  await admin.click('main table button:has-text("Pings")');
  await admin.waitForFunction(() => /hello from the browser test/.test(document.querySelector('main').innerText), null, { timeout: 5000 });
  check(true, 'the ping log shows the ping and its body');
  check(await admin.locator('.availability svg.strip rect.p-up').count() >= 1, 'its availability strip shows an up minute');
  await admin.screenshot({ path: `${OUT}/checks.png`, fullPage: true });
  // The agent's settings, changed on its page and cleared again.
  await admin.goto(`${URL}/agents/a1`);
  await admin.waitForSelector('#settings-form');
  await admin.fill('#settings-form input[name=grace]', '45s');
  await admin.click('#settings-form button[type=submit]');
  await admin.waitForFunction(() => /45s/.test(document.querySelector('main').innerText), null, { timeout: 5000 });
  check(true, "the admin set the agent's grace on its page");
  await admin.fill('#settings-form input[name=grace]', '');
  await admin.click('#settings-form button[type=submit]');
  await admin.waitForFunction(() => !/45s/.test(document.querySelector('main').innerText), null, { timeout: 5000 });
  check(true, "and cleared it back to the config's");
  await page.goto(`${URL}/checks`);
  await page.waitForSelector('main table .state.up');
  check(await page.locator('#check-form').count() === 0 && /Read-only/.test(await page.locator('main').innerText()),
    'viewer: the checks page lists the check, read-only');
  check(problems.length === 0, `no console error on the checks page (${problems.join(' | ')})`);
  const cross = await adminCtx.request.post(`${URL}/api/v1/targets`, {
    headers: { 'Content-Type': 'text/plain', Origin: 'https://evil.example' }, data: '{}',
  });
  check(cross.status() === 403, `a cross-site style change (text/plain, foreign Origin) is refused (${cross.status()})`);
  await adminCtx.close();

  // 8. A 4K wall screen.
  const wall = await browser.newContext({
    viewport: { width: 3840, height: 2160 },
    clientCertificates: [{ origin: URL, pfxPath: process.env.VIEWER_PFX, passphrase: process.env.VIEWER_PASS }],
  });
  const big = await wall.newPage();
  await big.goto(URL);
  await big.waitForSelector(cell(255));
  const size = await big.$eval(cell(0), (c) => c.getBoundingClientRect().width);
  const visible = await big.$$eval(`${grid} .c`, (cs) => cs.filter((c) => {
    const b = c.getBoundingClientRect();
    return b.width > 0 && b.bottom <= window.innerHeight;
  }).length);
  check(visible === 256 && size >= 18, `3840×2160: all 256 cells visible, ${size.toFixed(1)} px each`);
  await big.screenshot({ path: `${OUT}/grids-3840x2160.png` });
  await wall.close();
  await viewer.close();
  console.log(`RESULT ${JSON.stringify(results)}`);
} finally {
  await browser.close();
}
