// Rendering cost of 40 live grids (10,240 cells) on a 4K wall screen, in
// headless Chromium (run by tests/tests/web_ui.rs). Prints figures, asserts
// only that everything rendered and updated — timings are reported, never
// asserted.
//
// Measured in the page: the time to apply each live frame (JSON parse
// excluded: the EventSource handler's own work, i.e. diffing 10,240 cells
// and changing classes), the interval between animation frames (long ones
// are frames the browser dropped), and how many cells changed per frame.
// Phases: 30 s steady state; then CUT_CMD makes 10 /24s stop answering (an
// incident: 2,540 cells turn down at once) for 20 s; then RESTORE_CMD.

import { execSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const URL = process.env.SONDE_URL;
const GRIDS = Number(process.env.GRIDS || 40);

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

const pct = (xs, p) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const round = (v) => (v === null ? null : Math.round(v * 100) / 100);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const ctx = await browser.newContext({
    viewport: { width: 3840, height: 2160 },
    clientCertificates: [{ origin: URL, pfxPath: process.env.VIEWER_PFX, passphrase: process.env.VIEWER_PASS }],
  });
  const page = await ctx.newPage();
  const t0 = Date.now();
  await page.goto(URL);
  await page.waitForFunction((n) => document.querySelectorAll('.grid').length >= n
    && document.querySelectorAll('.grid .c[class*=" r"]').length >= n * 250, GRIDS, { timeout: 60000 });
  const firstPaint = (Date.now() - t0) / 1000;
  const cells = await page.locator('.grid .c').count();
  check(cells === GRIDS * 256, `${cells} cells on screen in ${GRIDS} grids`);
  const onScreen = await page.$$eval('.grid', (gs) => gs.filter((g) => g.getBoundingClientRect().bottom <= window.innerHeight).length);
  check(onScreen === GRIDS, `3840×2160: ${onScreen} of ${GRIDS} grids fit without scrolling`);

  // Frame intervals, recorded in the page.
  await page.evaluate(() => {
    window.benchFrames = [];
    let last = performance.now();
    const loop = (t) => { window.benchFrames.push(t - last); last = t; requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
  });
  async function phase(name, seconds) {
    const before = await page.evaluate(() => ({
      applied: window.sondeStats.applied, changed: window.sondeStats.cellsChanged,
    }));
    await page.evaluate(() => { window.benchFrames = []; window.sondeStats.applyMs = []; window.sondeStats.handleMs = []; });
    await page.waitForTimeout(seconds * 1000);
    const after = await page.evaluate(() => ({
      applied: window.sondeStats.applied, changed: window.sondeStats.cellsChanged, applyMs: window.sondeStats.applyMs, handleMs: window.sondeStats.handleMs,
      frames: window.benchFrames, heap: performance.memory ? performance.memory.usedJSHeapSize : null,
    }));
    const { applyMs } = after;
    const frames = after.frames.slice(1);
    const r = {
      phase: name,
      seconds,
      live_frames_applied: after.applied - before.applied,
      cells_changed: after.changed - before.changed,
      apply_ms_p50: round(pct(applyMs, 50)),
      apply_ms_p95: round(pct(applyMs, 95)),
      apply_ms_max: round(applyMs.length ? Math.max(...applyMs) : null),
      handle_ms_p50: round(pct(after.handleMs, 50)),
      handle_ms_p95: round(pct(after.handleMs, 95)),
      frame_interval_ms_p50: round(pct(frames, 50)),
      frame_interval_ms_p95: round(pct(frames, 95)),
      frame_interval_ms_max: round(frames.length ? Math.max(...frames) : null),
      frames_over_50ms: frames.filter((f) => f > 50).length,
      animation_frames: frames.length,
      js_heap_mb: after.heap ? round(after.heap / 2 ** 20) : null,
    };
    console.log(`FIGURES ${JSON.stringify(r)}`);
    return r;
  }
  console.log(`FIGURES ${JSON.stringify({ phase: 'load', seconds_to_all_cells_coloured: firstPaint, cells })}`);
  const steady = await phase('steady', 30);
  check(steady.live_frames_applied >= 20, `live frames applied in 30 s: ${steady.live_frames_applied}`);
  execSync(process.env.CUT_CMD, { stdio: 'inherit', shell: '/bin/bash' });
  const incident = await phase('incident', 20);
  const down = await page.locator('.grid .c.down').count();
  check(down >= 2540, `${down} cells turned down during the incident`);
  check(incident.cells_changed >= 2540, `${incident.cells_changed} cell classes changed`);
  execSync(process.env.RESTORE_CMD, { stdio: 'inherit', shell: '/bin/bash' });
  await page.screenshot({ path: `${process.env.OUT_DIR}/grids-10240-cells.png` });
  await ctx.close();
} finally {
  await browser.close();
}
