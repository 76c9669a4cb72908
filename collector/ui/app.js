// sonde web UI: one ES module, no dependencies, no build step.
//
// Pages are client-side routes over the JSON API (/api/v1/…). The grid page
// follows the live stream (/api/v1/live, server-sent events): grids are
// built once and a cell's class is changed only when its colour changes,
// so 40 grids of 256 cells stay cheap to update every second. Everything
// shown comes from the API; nothing is inserted as HTML (textContent only),
// and there are no inline scripts or styles (the CSP forbids them).

const BINS = [1, 5, 20, 50, 100, 200]; // ms: r0 <1, r1 <5, … r6 >=200
const STATES = ['not monitored', 'up', 'partial', 'down', 'no data'];
const REPLAY_MINUTES = 1440;

// Measured by the browser test and the benchmark.
const stats = (window.sondeStats = {
  frames: 0,        // live frames received
  applied: 0,       // frames painted
  cellsChanged: 0,  // cell classes changed, in all
  applyMs: [],      // time to apply each painted frame, ms (last 600)
  handleMs: [],     // time to handle each live event (JSON parse + apply), ms (last 600)
});

const app = {
  who: null,
  live: new Map(), // prefix -> latest live frame
  order: [],       // prefixes in display order
  mode: 'live',    // or 'replay'
  replayAt: null,  // ms of the replayed minute
  grids: new Map(), // prefix -> {section, cells, frame, focus}
  filter: { prefix: '', state: '', agentAddrs: null, found: null },
  es: null,
  page: null,      // the current page's cleanup
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const $ = (sel, root = document) => root.querySelector(sel);

async function api(path, opts = {}) {
  const init = { method: opts.method || 'GET', headers: {} };
  if (opts.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

function fmtMs(v) {
  if (v === null || v === undefined) return '–';
  if (v < 1) return `${v.toFixed(3)} ms`;
  if (v < 100) return `${v.toFixed(1)} ms`;
  return `${Math.round(v)} ms`;
}
const fmtPct = (v) => (v === null || v === undefined ? '–' : `${v.toFixed(v < 10 && v > 0 ? 1 : 0)} %`);
const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : '–');
const fmtClock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function ago(ms) {
  if (!ms) return '–';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function badge(state) {
  return el('span', { class: `state ${state}`, text: state });
}

function table(headers, rows, opts = {}) {
  const t = el('table', { class: opts.class });
  if (opts.caption) t.append(el('caption', { class: 'muted', text: opts.caption }));
  t.append(el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', class: h.num ? 'num' : null, text: h.label || h })))));
  const body = el('tbody');
  for (const r of rows) {
    body.append(el('tr', {}, r.map((c, i) => el('td', { class: headers[i] && headers[i].num ? 'num' : null }, c))));
  }
  if (rows.length === 0) body.append(el('tr', {}, el('td', { colspan: headers.length, class: 'muted', text: opts.empty || 'Nothing here.' })));
  t.append(body);
  return t;
}

function errorBox(e) {
  return el('p', { class: 'error', role: 'alert', text: e.message || String(e) });
}

// ------------------------------------------------------------ cell colour

function rttClass(r) {
  let i = 0;
  while (i < BINS.length && r >= BINS[i]) i += 1;
  return `r${i}`;
}

// The colour class of a cell: state first, then loss, then RTT.
function colour(s, r, l) {
  if (s === 0) return '';
  if (s === 3 || (l !== null && l >= 100)) return 'down';
  if (s === 4) return 'stale';
  if (s === 2 || (l !== null && l > 0)) return 'lossy';
  if (r === null) return 'stale';
  return rttClass(r);
}

function describe(addr, s, r, l, replay) {
  const lines = [addr, STATES[s] || '?'];
  if (s !== 0) {
    lines.push(`${replay ? 'mean' : 'RTT'} ${fmtMs(r)}, loss ${fmtPct(l)}`);
  }
  return lines.join('\n');
}

// ------------------------------------------------------------ grid page

function cellAddress(grid, i) {
  const f = grid.frame;
  if (f && f.a) return f.a[i];
  const base = grid.prefix.split('/')[0].split('.');
  base[3] = String(i);
  return base.join('.');
}

function buildGrid(prefix) {
  const v6 = prefix.includes(':');
  // A group of buttons, one per address; arrow keys move between them
  // (one tab stop per grid), Enter opens the address.
  const cells = el('div', { class: 'cells', role: 'group', 'aria-label': `Addresses of ${prefix}` });
  const count = el('span', { class: 'count' });
  const href = `/prefixes/${prefix}`;
  const section = el('section', { class: 'grid', 'data-prefix': prefix },
    el('h2', {}, el('a', { href, 'data-nav': true, text: prefix }), count),
    cells);
  const grid = { prefix, section, cellsEl: cells, cells: [], count, frame: null, focus: 0 };
  if (!v6) ensureCells(grid, 256);
  cells.addEventListener('keydown', (ev) => gridKey(grid, ev));
  cells.addEventListener('click', (ev) => {
    const i = Number(ev.target.dataset.i);
    if (!Number.isNaN(i) && ev.target.classList.contains('c')) openCell(grid, i);
  });
  cells.addEventListener('mouseover', (ev) => showTip(grid, ev.target));
  cells.addEventListener('focusin', (ev) => showTip(grid, ev.target));
  cells.addEventListener('mouseout', hideTip);
  cells.addEventListener('focusout', hideTip);
  return grid;
}

function ensureCells(grid, n) {
  while (grid.cells.length < n) {
    const i = grid.cells.length;
    const c = el('div', { class: 'c', role: 'button', tabindex: i === 0 ? 0 : -1, 'data-i': i });
    grid.cells.push(c);
    if (!grid.prefix.includes(':')) c.setAttribute('aria-label', cellAddress(grid, i));
    grid.cellsEl.append(c);
  }
  while (grid.cells.length > n) grid.cells.pop().remove();
}

function openCell(grid, i) {
  const f = grid.frame;
  if (!f || f.s[i] === 0) return;
  navigate(`/address/${cellAddress(grid, i)}`);
}

function gridKey(grid, ev) {
  const i = Number(ev.target.dataset.i);
  if (Number.isNaN(i)) return;
  const n = grid.cells.length;
  let j = i;
  switch (ev.key) {
    case 'ArrowRight': j = Math.min(n - 1, i + 1); break;
    case 'ArrowLeft': j = Math.max(0, i - 1); break;
    case 'ArrowDown': j = Math.min(n - 1, i + 16); break;
    case 'ArrowUp': j = Math.max(0, i - 16); break;
    case 'Home': j = ev.ctrlKey ? 0 : i - (i % 16); break;
    case 'End': j = ev.ctrlKey ? n - 1 : Math.min(n - 1, i - (i % 16) + 15); break;
    case 'Enter': case ' ': openCell(grid, i); ev.preventDefault(); return;
    default: return;
  }
  ev.preventDefault();
  focusCell(grid, j);
}

function focusCell(grid, j) {
  grid.cells[grid.focus].tabIndex = -1;
  grid.focus = j;
  grid.cells[j].tabIndex = 0;
  grid.cells[j].focus();
}

function showTip(grid, target) {
  if (!target.classList || !target.classList.contains('c') || !grid.frame) return;
  const i = Number(target.dataset.i);
  const f = grid.frame;
  const text = describe(cellAddress(grid, i), f.s[i], f.r[i], f.l[i], app.mode === 'replay');
  const tip = $('#tip');
  tip.textContent = text;
  tip.hidden = false;
  const box = target.getBoundingClientRect();
  tip.style.left = `${Math.min(window.innerWidth - 330, box.right + 8)}px`;
  tip.style.top = `${Math.max(0, box.top - 8)}px`;
  target.setAttribute('aria-describedby', 'tip');
}

function hideTip() {
  $('#tip').hidden = true;
}

// Paints one prefix frame into its grid; only cells whose class changes
// are touched.
function paint(grid, frame) {
  grid.frame = frame;
  const n = frame.s.length;
  if (frame.a) {
    ensureCells(grid, n);
    frame.a.forEach((a, i) => { if (grid.cells[i].getAttribute('aria-label') !== a) grid.cells[i].setAttribute('aria-label', a); });
  }
  const f = app.filter;
  let changed = 0;
  let monitored = 0;
  let down = 0;
  for (let i = 0; i < n; i += 1) {
    const s = frame.s[i];
    if (s !== 0) monitored += 1;
    if (s === 3) down += 1;
    let cls = 'c';
    const c = colour(s, frame.r[i], frame.l[i]);
    if (c) cls += ` ${c}`;
    if (dimmed(grid, i, s)) cls += ' dim';
    if (f.found && f.found === cellAddress(grid, i)) cls += ' found';
    const cell = grid.cells[i];
    if (cell.className !== cls) {
      cell.className = cls;
      changed += 1;
    }
  }
  grid.count.textContent = `${monitored} monitored${down ? `, ${down} down` : ''}`;
  stats.cellsChanged += changed;
  return changed;
}

function dimmed(grid, i, s) {
  const f = app.filter;
  if (f.state !== '' && String(s) !== f.state) return true;
  if (f.agentAddrs && !f.agentAddrs.has(cellAddress(grid, i))) return true;
  return false;
}

function applyVisibility(grid) {
  const hide = app.filter.prefix && !grid.prefix.includes(app.filter.prefix);
  grid.section.classList.toggle('hidden', Boolean(hide));
}

// Applies frames (a live frame's changes, or a whole replay frame).
function applyFrames(order, frames, container) {
  const t0 = performance.now();
  if (!container) return;
  for (const f of frames) {
    let g = app.grids.get(f.prefix);
    if (!g) {
      g = buildGrid(f.prefix);
      app.grids.set(f.prefix, g);
      applyVisibility(g);
    }
    paint(g, f);
  }
  // Grids in order; gone prefixes removed.
  const keep = new Set(order);
  for (const [p, g] of app.grids) {
    if (!keep.has(p)) { g.section.remove(); app.grids.delete(p); }
  }
  let prev = null;
  for (const p of order) {
    const g = app.grids.get(p);
    if (!g) continue;
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== g.section) container.insertBefore(g.section, want);
    prev = g.section;
  }
  const ms = performance.now() - t0;
  stats.applyMs.push(ms);
  if (stats.applyMs.length > 600) stats.applyMs.shift();
  stats.applied += 1;
}

function repaintAll() {
  for (const g of app.grids.values()) {
    applyVisibility(g);
    if (g.frame) paint(g, g.frame);
  }
}

function onLiveFrame(ev) {
  const t0 = performance.now();
  const msg = JSON.parse(ev.data);
  stats.frames += 1;
  for (const f of msg.changed) app.live.set(f.prefix, f);
  for (const p of [...app.live.keys()]) if (!msg.prefixes.includes(p)) app.live.delete(p);
  app.order = msg.prefixes;
  app.serverNow = msg.t;
  setConn();
  if (app.mode === 'live') {
    const only = app.onlyPrefix;
    const order = only ? app.order.filter((p) => p === only) : app.order;
    applyFrames(order, msg.changed.filter((f) => order.includes(f.prefix)), $('#grids'));
    if ($('#table-view') && !$('#table-view').hidden && stats.frames % 5 === 0) renderTable();
    const empty = $('#grids-empty');
    if (empty) empty.hidden = order.length > 0;
  }
  stats.handleMs.push(performance.now() - t0);
  if (stats.handleMs.length > 600) stats.handleMs.shift();
}

function connect() {
  if (app.es) return;
  const es = new EventSource('/api/v1/live');
  app.es = es;
  es.addEventListener('frame', onLiveFrame);
  es.addEventListener('open', () => { app.connected = true; setConn(); });
  es.addEventListener('error', () => { app.connected = false; setConn(); });
}

function setConn() {
  const c = $('#conn');
  if (app.mode === 'replay') {
    c.className = 'conn replay';
    c.textContent = `replay ${fmtClock(app.replayAt)}`;
  } else if (app.connected) {
    c.className = 'conn live';
    c.textContent = 'live';
  } else {
    c.className = 'conn lost';
    c.textContent = 'reconnecting…';
  }
}

function legend() {
  const items = [];
  const labels = ['< 1 ms', '1–5 ms', '5–20 ms', '20–50 ms', '50–100 ms', '100–200 ms', '≥ 200 ms'];
  labels.forEach((t, i) => items.push(el('span', {}, el('span', { class: `sw r${i}`, 'aria-hidden': 'true' }), t)));
  items.push(el('span', {}, el('span', { class: 'sw lossy', 'aria-hidden': 'true' }), 'loss (some probes lost)'));
  items.push(el('span', {}, el('span', { class: 'sw down', 'aria-hidden': 'true' }), 'down (all lost)'));
  items.push(el('span', {}, el('span', { class: 'sw stale', 'aria-hidden': 'true' }), 'no recent data'));
  items.push(el('span', {}, el('span', { class: 'sw', 'aria-hidden': 'true' }), 'not monitored'));
  return el('div', { class: 'legend', role: 'note', 'aria-label': 'Colour legend' }, el('strong', { text: 'RTT' }), items);
}

async function agentFilter(name) {
  if (!name) { app.filter.agentAddrs = null; repaintAll(); return; }
  const addrs = new Set();
  let after = 0;
  for (let page = 0; page < 20; page += 1) {
    const r = await api(`/api/v1/targets?agent=${encodeURIComponent(name)}&limit=10000&after=${after}`);
    for (const t of r.targets) if (t.address) addrs.add(t.address);
    if (!r.next_after) break;
    after = r.next_after;
  }
  app.filter.agentAddrs = addrs;
  repaintAll();
}

function search(value) {
  const q = value.trim();
  const out = $('#search-result');
  app.filter.found = null;
  for (const g of app.grids.values()) {
    const n = g.cells.length;
    for (let i = 0; i < n; i += 1) {
      if (cellAddress(g, i) === q) {
        app.filter.found = q;
        repaintAll();
        g.section.classList.remove('hidden');
        g.cells[i].scrollIntoView({ block: 'center' });
        focusCell(g, i);
        out.textContent = `${q}: ${STATES[g.frame ? g.frame.s[i] : 0]}`;
        return;
      }
    }
  }
  repaintAll();
  out.textContent = q ? `${q} is in none of your grids` : '';
}

function renderTable() {
  const box = $('#table-view');
  if (!box) return;
  const rows = [];
  for (const p of app.order) {
    const g = app.grids.get(p);
    if (!g || !g.frame || g.section.classList.contains('hidden')) continue;
    const f = g.frame;
    for (let i = 0; i < f.s.length; i += 1) {
      if (f.s[i] === 0) continue;
      const addr = cellAddress(g, i);
      rows.push([el('a', { href: `/address/${addr}`, 'data-nav': true, text: addr }), STATES[f.s[i]], fmtMs(f.r[i]), fmtPct(f.l[i])]);
    }
  }
  box.replaceChildren(table(['Address', 'State', { label: app.mode === 'replay' ? 'Mean' : 'RTT', num: true }, { label: 'Loss', num: true }], rows, { empty: 'No monitored address.' }));
}

// Replay: the slider gives minutes before now; the frame of that minute
// replaces the grids until "Live".
let replayTimer = null;
let playTimer = null;

async function showReplay(minutesAgo) {
  const out = $('#replay-when');
  if (minutesAgo <= 0) { backToLive(); return; }
  const base = app.serverNow || Date.now();
  const at = Math.floor((base - minutesAgo * 60000) / 60000) * 60000;
  try {
    const r = await api(`/api/v1/replay?at=${at}`);
    app.mode = 'replay';
    app.replayAt = r.at_ms;
    const only = app.onlyPrefix;
    const frames = only ? r.prefixes.filter((f) => f.prefix === only) : r.prefixes;
    applyFrames(frames.map((f) => f.prefix), frames, $('#grids'));
    out.textContent = `${fmtClock(r.at_ms)} (${minutesAgo} min ago)`;
    $('#grids').dataset.replayAt = String(r.at_ms);
    setConn();
    renderTableIfShown();
  } catch (e) {
    out.textContent = e.message;
  }
}

function renderTableIfShown() {
  const t = $('#table-view');
  if (t && !t.hidden) renderTable();
}

function backToLive() {
  clearInterval(playTimer);
  playTimer = null;
  app.mode = 'live';
  app.replayAt = null;
  const slider = $('#replay');
  if (slider) slider.value = '0';
  const out = $('#replay-when');
  if (out) out.textContent = 'live';
  const grids = $('#grids');
  if (grids) {
    delete grids.dataset.replayAt;
    const only = app.onlyPrefix;
    const order = only ? app.order.filter((p) => p === only) : app.order;
    applyFrames(order, order.map((p) => app.live.get(p)).filter(Boolean), grids);
  }
  setConn();
  renderTableIfShown();
}

function replayBar() {
  const slider = el('input', {
    type: 'range', id: 'replay', min: -REPLAY_MINUTES, max: 0, step: 1, value: 0,
    'aria-label': 'Replay: minutes before now',
  });
  slider.addEventListener('input', () => {
    const m = -Number(slider.value);
    $('#replay-when').textContent = m === 0 ? 'live' : `${m} min ago…`;
    clearTimeout(replayTimer);
    replayTimer = setTimeout(() => showReplay(m), 150);
  });
  const play = el('button', { type: 'button', id: 'replay-play', text: '▶ Play' });
  play.addEventListener('click', () => {
    if (playTimer) { clearInterval(playTimer); playTimer = null; play.textContent = '▶ Play'; return; }
    play.textContent = '❚❚ Pause';
    playTimer = setInterval(() => {
      const v = Math.min(0, Number(slider.value) + 1);
      slider.value = String(v);
      if (v >= 0) { play.textContent = '▶ Play'; backToLive(); } else showReplay(-v);
    }, 400);
  });
  const live = el('button', { type: 'button', id: 'replay-live', text: 'Live', onclick: backToLive });
  return el('div', { class: 'replaybar' },
    el('label', { for: 'replay', text: 'Replay (24 h)' }), slider,
    el('output', { id: 'replay-when', for: 'replay', text: 'live' }), play, live);
}

async function gridsPage(main, onlyPrefix) {
  app.onlyPrefix = onlyPrefix || null;
  app.grids.clear();
  const agentSel = el('select', { id: 'f-agent' }, el('option', { value: '', text: 'all agents' }));
  const stateSel = el('select', { id: 'f-state' },
    el('option', { value: '', text: 'all states' }),
    STATES.map((s, i) => (i === 0 ? null : el('option', { value: String(i), text: s }))));
  const prefixIn = el('input', { id: 'f-prefix', type: 'search', placeholder: '10.1.2.', size: 14 });
  const searchIn = el('input', { id: 'f-search', type: 'search', placeholder: '10.1.2.3', size: 16 });
  const viewBtn = el('button', { type: 'button', id: 'f-view', 'aria-pressed': 'false', text: 'Table view' });
  main.replaceChildren(
    el('h1', { text: onlyPrefix ? `Prefix ${onlyPrefix}` : 'Prefix grids' }),
    el('div', { class: 'toolbar' },
      onlyPrefix ? null : el('label', {}, 'Prefix', prefixIn),
      el('label', {}, 'Agent', agentSel),
      el('label', {}, 'State', stateSel),
      el('label', {}, 'Find address', searchIn),
      viewBtn,
      el('span', { id: 'search-result', role: 'status', class: 'muted' })),
    legend(),
    replayBar(),
    el('p', { id: 'grids-empty', class: 'muted', hidden: true, text: 'No prefix to show yet: no target of your tenant has results, and no /24 is granted to it.' }),
    el('div', { id: 'grids', class: 'grids' }),
    el('div', { id: 'table-view', hidden: true }));
  prefixIn.addEventListener('input', () => { app.filter.prefix = prefixIn.value.trim(); repaintAll(); });
  stateSel.addEventListener('change', () => { app.filter.state = stateSel.value; repaintAll(); });
  agentSel.addEventListener('change', () => agentFilter(agentSel.value).catch((e) => { $('#search-result').textContent = e.message; }));
  searchIn.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') search(searchIn.value); });
  searchIn.addEventListener('search', () => search(searchIn.value));
  viewBtn.addEventListener('click', () => {
    const t = $('#table-view');
    t.hidden = !t.hidden;
    $('#grids').hidden = !t.hidden;
    viewBtn.setAttribute('aria-pressed', String(!t.hidden));
    viewBtn.textContent = t.hidden ? 'Table view' : 'Grid view';
    if (!t.hidden) renderTable();
  });
  api('/api/v1/agents').then((r) => {
    for (const a of r.agents) agentSel.append(el('option', { value: a.name, text: app.who && app.who.operator ? `${a.tenant}/${a.name}` : a.name }));
  }).catch(() => {});
  app.mode = 'live';
  const order = onlyPrefix ? app.order.filter((p) => p === onlyPrefix) : app.order;
  applyFrames(order, order.map((p) => app.live.get(p)).filter(Boolean), $('#grids'));
  connect();
  return () => { clearInterval(playTimer); playTimer = null; app.mode = 'live'; app.onlyPrefix = null; app.grids.clear(); };
}

// ------------------------------------------------------------- charts

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) e.append(c);
  return e;
}

// Bars of mean RTT per step, loss as a bar from the top; hover titles.
function barChart(points, opts) {
  const W = opts.width || 720; const H = 160; const pad = 40;
  const n = Math.max(points.length, 1);
  const max = Math.max(1e-3, ...points.map((p) => p.mean || 0)) * 1.1;
  const bw = (W - pad) / n;
  const label = opts.days
    ? (t) => new Date(t).toLocaleString([], { weekday: 'short', hour: '2-digit', minute: '2-digit' })
    : fmtClock;
  const bars = [];
  points.forEach((p, i) => {
    const x = pad + i * bw;
    const label = `${fmtClock(p.t)}: ${p.probes ? `${fmtMs(p.mean)}, loss ${fmtPct(p.loss)}` : 'no data'}`;
    if (p.mean !== null && p.mean !== undefined) {
      const h = ((H - 20) * p.mean) / max;
      bars.push(svg('rect', { class: 'bar', x: x + 0.5, y: H - 14 - h, width: Math.max(1, bw - 1), height: h }, svg('title', {}, document.createTextNode(label))));
    }
    if (p.loss) {
      const h = ((H - 20) * p.loss) / 100;
      bars.push(svg('rect', { class: 'lossbar', x: x + 0.5, y: 2, width: Math.max(1, bw - 1), height: h, opacity: 0.7 }, svg('title', {}, document.createTextNode(label))));
    }
  });
  const first = points[0];
  const last = points[points.length - 1];
  return svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': opts.label },
    svg('line', { class: 'axis', x1: pad, y1: H - 14, x2: W, y2: H - 14 }),
    svg('text', { x: 0, y: 12 }, document.createTextNode(fmtMs(max))),
    first ? svg('text', { x: pad, y: H - 2 }, document.createTextNode(label(first.t))) : null,
    last ? svg('text', { x: W, y: H - 2, 'text-anchor': 'end' }, document.createTextNode(label(last.t))) : null,
    bars);
}

// Every step of [from, to) with the points that have data, so gaps show.
function slots(points, from, to, step) {
  const at = new Map(points.map((p) => [p.t, p]));
  const out = [];
  for (let t = Math.floor(from / step) * step; t < to; t += step) out.push(at.get(t) || { t, mean: null, loss: null, probes: 0 });
  return out;
}

// ---------------------------------------------------------- address page

async function addressPage(main, addr) {
  const len = addr.includes(':') ? 128 : 32;
  main.replaceChildren(el('h1', { text: `Address ${addr}` }), el('p', { class: 'muted', text: 'Loading…' }));
  let targets;
  try {
    targets = (await api(`/api/v1/targets?prefix=${addr}/${len}`)).targets;
  } catch (e) { main.replaceChildren(el('h1', { text: `Address ${addr}` }), errorBox(e)); return null; }
  const prefix = addr.includes(':') ? null : `${addr.split('.').slice(0, 3).join('.')}.0/24`;
  const head = [el('h1', { text: `Address ${addr}` }),
    prefix ? el('p', {}, 'In ', el('a', { href: `/prefixes/${prefix}`, 'data-nav': true, text: prefix })) : null];
  if (targets.length === 0) {
    main.replaceChildren(...head, el('p', { class: 'muted', text: 'No series of yours measures this address.' }));
    return null;
  }
  const panels = targets.map((t) => seriesPanel(t));
  const outagesBox = el('div', {}, el('p', { class: 'muted', text: 'Loading outages…' }));
  main.replaceChildren(...head, ...panels.map((p) => p.el), el('h2', { text: 'Outages' }), outagesBox);
  const loadOutages = () => api('/api/v1/outages?limit=1000').then((r) => {
    const mine = r.outages.filter((o) => o.subject === addr || (o.scope === 'prefix' && prefix && o.subject === prefix)
      || targets.some((t) => (o.detail && o.detail.target === t.target)));
    outagesBox.replaceChildren(outageTable(mine));
  }).catch((e) => outagesBox.replaceChildren(errorBox(e)));
  loadOutages();
  const timer = setInterval(() => {
    panels.forEach((p) => p.refresh());
    loadOutages();
  }, 15000);
  return () => clearInterval(timer);
}

function seriesPanel(t) {
  const box = el('section', { class: 'panel series', 'data-series': `${t.agent}/${t.probe}/${t.target}` });
  const step = el('select', { 'aria-label': 'Group by' },
    el('option', { value: '1m', text: '1 min' }), el('option', { value: '5m', text: '5 min', selected: true }), el('option', { value: '1h', text: '1 h' }));
  const body = el('div');
  box.append(el('h2', {}, `${t.agent} → ${t.target} (${t.probe}) `, badge(t.state)), body);
  const path = `/api/v1/series/${encodeURIComponent(t.agent)}/${encodeURIComponent(t.target)}?tenant=${encodeURIComponent(t.tenant)}&probe=${t.probe}`;
  async function refresh() {
    try {
      const r = await api(`${path}&step=${step.value}`);
      const s = r.series;
      const av = s.averages;
      const windows = ['1m', '5m', '1h', '24h'];
      const avg = table(['Window', { label: 'Mean', num: true }, { label: 'Loss', num: true }, { label: 'Jitter', num: true }, { label: 'Probes', num: true }],
        windows.map((w) => [w, fmtMs(av[w].mean_ms), fmtPct(av[w].loss_pct), fmtMs(av[w].jitter_ms), av[w].probes]));
      const timeline = s.timeline.map((m) => ({ t: m.start_ms, mean: m.mean_ms, loss: m.loss_pct, probes: m.probes }));
      const history = slots(r.minutes.map((m) => ({ t: m.start_ms, mean: m.mean_ms, loss: m.loss_pct, probes: m.probes })),
        r.from_ms, r.to_ms, r.step_ms);
      const parts = [
        el('div', { class: 'cols' },
          el('div', {}, el('h3', { text: 'Moving averages' }), avg,
            el('p', { class: 'muted', text: `Latest: ${av.latest ? `${fmtMs(av.latest.rtt_ms)} (${av.latest.status}, ${ago(av.latest.time_ns / 1e6)})` : '–'}` })),
          el('div', { class: 'timeline' }, el('h3', { text: 'Last 60 minutes, minute by minute' }),
            barChart(timeline, { label: `RTT and loss per minute over the last hour for ${t.target}` }))),
        el('h3', {}, '24 hours, grouped by ', step),
        barChart(history, { label: `RTT and loss over 24 hours for ${t.target}`, width: 1440, days: true }),
      ];
      if (s.route) {
        parts.push(el('h3', { text: `Route (since ${fmtTime(s.route.since_ns / 1e6)})` }),
          el('ol', { class: 'hops' }, s.route.hops.map((h) => el('li', { text: h || '*' }))));
      }
      if (t.probe === 'trace') parts.push(await routeChanges(t));
      if (s.outage) parts.push(el('p', { class: 'error', text: `Down since ${fmtTime(s.outage.start_ns / 1e6)}` }));
      body.replaceChildren(...parts);
    } catch (e) { body.replaceChildren(errorBox(e)); }
  }
  step.addEventListener('change', () => refresh());
  refresh();
  return { el: box, refresh };
}

async function routeChanges(t) {
  const r = await api(`/api/v1/events?agent=${encodeURIComponent(t.agent)}&before=0&limit=1000`);
  const changes = r.events.filter((e) => e.kind === 'route-change' && e.detail && e.detail.target === t.target);
  const hops = (p) => (p && p.hops ? p.hops.join(' → ') : JSON.stringify(p));
  return el('div', {}, el('h3', { text: 'Route changes' }),
    table(['When', 'Old', 'New'], changes.map((e) => [fmtTime(e.at_ms), el('span', { class: 'hops', text: hops(e.detail.old) }), el('span', { class: 'hops', text: hops(e.detail.new) })]),
      { empty: 'No route change recorded.' }));
}

function outageTable(rows) {
  return table(['Scope', 'Subject', 'Start', 'End', { label: 'Duration', num: true }, { label: 'Series', num: true }],
    rows.map((o) => [o.scope, o.subject, fmtTime(o.start_ms), o.end_ms ? fmtTime(o.end_ms) : badge('down'),
      o.duration_s !== null && o.duration_s !== undefined ? `${Math.round(o.duration_s)} s` : ago(o.start_ms).replace(' ago', ''), o.lost]),
    { empty: 'No outage.' });
}

// ---------------------------------------------------------- other pages

async function agentsPage(main) {
  main.replaceChildren(el('h1', { text: 'Agents' }));
  const r = await api('/api/v1/agents');
  const op = app.who && app.who.operator;
  // The tenant column only for operators, who see several.
  const from = op ? 0 : 1;
  main.append(table(['Tenant', 'Agent', 'State', 'Last heartbeat', 'Version', 'Host', 'Address'].slice(from),
    r.agents.map((a) => [a.tenant,
      el('a', { href: `/agents/${encodeURIComponent(a.name)}${op ? `?tenant=${encodeURIComponent(a.tenant)}` : ''}`, 'data-nav': true, text: a.name }),
      badge(a.state), ago(a.last_heartbeat_ms), a.agent_version || '–', a.hostname || '–', a.remote_addr || '–'].slice(from)),
    { empty: 'No agent has connected yet.' }));
  const timer = setInterval(() => { if (location.pathname === '/agents') render(); }, 10000);
  return () => clearInterval(timer);
}

async function agentPage(main, name) {
  const tenant = new URLSearchParams(location.search).get('tenant');
  main.replaceChildren(el('h1', { text: `Agent ${name}` }));
  const d = await api(`/api/v1/agents/${encodeURIComponent(name)}${tenant ? `?tenant=${encodeURIComponent(tenant)}` : ''}`);
  const a = d.agent;
  main.append(el('div', { class: 'cols' },
    el('div', { class: 'panel' }, el('h2', { text: 'State' }), table(['', ''], [
      ['State', badge(a.state)], ['Connected', a.connected ? 'yes' : 'no'], ['Last heartbeat', `${fmtTime(a.last_heartbeat_ms)} (${ago(a.last_heartbeat_ms)})`],
      ['Version', a.agent_version || '–'], ['Host', a.hostname || '–'], ['OS', a.os || '–'], ['Connected from', a.remote_addr || '–'],
      ['Heartbeat', a.heartbeat_interval_ms ? `${a.heartbeat_interval_ms / 1000} s (grace ${a.grace_ms / 1000} s)` : '–']])),
    el('div', { class: 'panel' }, el('h2', { text: 'Public IP' }), publicIp(d.public_ip)),
    el('div', { class: 'panel' }, el('h2', { text: 'System' }), metrics(d.metrics))));
  main.append(el('h2', { text: 'Listening ports' }), ports(d.ports));
  const q = `?tenant=${encodeURIComponent(a.tenant)}`;
  const hist = await api(`/api/v1/agents/${encodeURIComponent(name)}/availability${q}`);
  main.append(el('h2', { text: 'Last 24 hours' }), availabilityStrip(hist, name));
  const settings = await api(`/api/v1/agents/${encodeURIComponent(name)}/settings${q}`);
  main.append(el('h2', { text: 'Settings' }), settingsPanel(name, q, settings, () => agentPage(main, name)));
  return null;
}

// Heartbeat interval, grace and schedule: own, the config's, what applies;
// admins change them here (an empty field: the config's value).
function settingsPanel(name, q, v, onDone) {
  const keys = [['heartbeat_interval', 'Heartbeat interval'], ['grace', 'Grace'], ['schedule', 'Schedule']];
  const own = v.settings || {};
  const rows = keys.map(([k, label]) => [label, own[k] || '–', v.defaults[k] || 'always', v.effective[k] || 'always']);
  const box = el('div', {}, table(['', 'This agent', 'Config', 'Applies'], rows));
  if (!app.who || app.who.role !== 'admin') return box;
  const f = Object.fromEntries(keys.map(([k]) => [k, el('input', { name: k, value: own[k] || '', placeholder: v.defaults[k] || 'always' })]));
  const msg = el('p', { role: 'status', class: 'muted', id: 'settings-form-msg' });
  const form = el('form', { class: 'edit', id: 'settings-form', 'aria-label': `Settings of ${name}` },
    keys.map(([k, label]) => el('label', {}, label, f[k])),
    el('div', { class: 'actions' }, el('button', { class: 'primary', type: 'submit', text: 'Save settings' }), msg));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const [k] of keys) if (f[k].value.trim()) body[k] = f[k].value.trim();
    try { await api(`/api/v1/agents/${encodeURIComponent(name)}/settings${q}`, { method: 'PUT', body }); onDone(); }
    catch (e) { msg.textContent = e.message; msg.className = 'error'; }
  });
  box.append(form);
  return box;
}

function publicIp(p) {
  if (!p) return el('p', { class: 'muted', text: 'Not reported.' });
  const cur = ['ipv4', 'ipv6'].filter((f) => p[f]).map((f) => el('p', {}, `${f}: `, el('strong', { text: p[f] })));
  const hist = (p.history || []).slice(0, 20).map((h) => [h.family, h.address, fmtTime(h.first_seen_ms), fmtTime(h.last_seen_ms)]);
  return el('div', {}, cur.length ? cur : el('p', { class: 'muted', text: 'No current address.' }),
    el('h3', { text: 'History (newest first)' }),
    table(['Family', 'Address', 'First seen', 'Last seen'], hist, { empty: 'Not looked up yet.' }));
}

const bytes = (v) => (v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(1)} GiB` : v >= 2 ** 20 ? `${(v / 2 ** 20).toFixed(1)} MiB` : `${Math.round(v / 1024)} KiB`);

function metrics(m) {
  if (!m) return el('p', { class: 'muted', text: 'Not reported.' });
  const rows = [
    ['CPU busy', fmtPct(100 * (m.cpu_utilisation || 0)) + (m.cpu_count ? ` of ${m.cpu_count} CPUs` : '')],
    ['Load (1, 5, 15 min)', (m.load || []).map((x) => x.toFixed(2)).join(', ')],
  ];
  if (m.memory_total_bytes) rows.push(['Memory used', `${bytes(m.memory_used_bytes)} of ${bytes(m.memory_total_bytes)}`]);
  for (const d of m.disks || []) if (d.total_bytes) rows.push([`Disk ${d.mount}`, `${fmtPct((100 * d.used_bytes) / d.total_bytes)} of ${bytes(d.total_bytes)}`]);
  for (const i of m.interfaces || []) rows.push([`Net ${i.name}`, `${bytes(i.rx_bytes_per_second)}/s in, ${bytes(i.tx_bytes_per_second)}/s out`]);
  if (m.error) rows.push(['Not read', m.error]);
  rows.push(['Sampled', `${fmtTime(m.at_ms)} (${ago(m.at_ms)})`]);
  return table(['', ''], rows);
}

function ports(p) {
  if (!p || !Array.isArray(p.ports)) return el('p', { class: 'muted', text: 'Not reported.' });
  const rank = { high: 0, medium: 1, low: 2 };
  const list = [...p.ports].sort((a, b) => (rank[a.risk] ?? 3) - (rank[b.risk] ?? 3) || a.port - b.port);
  return el('div', {}, p.error ? el('p', { class: 'error', text: p.error }) : null,
    table(['Port', 'Protocol', 'Address', 'Program', 'User', 'Service', 'Risk'],
      list.map((x) => [x.port, x.protocol, x.address, x.program || '–', x.user || '–', x.service || '–', badge(x.risk || 'low')]),
      { empty: 'No listening port reported.' }));
}

async function outagesPage(main) {
  main.replaceChildren(el('h1', { text: 'Outages' }));
  const [open, all] = await Promise.all([api('/api/v1/outages?open=true&limit=1000'), api('/api/v1/outages?limit=200')]);
  main.append(el('h2', { text: `Open (${open.outages.length})` }), outageTable(open.outages),
    el('h2', { text: 'Recent' }), outageTable(all.outages));
  return null;
}

async function eventsPage(main) {
  main.replaceChildren(el('h1', { text: 'Events' }));
  const box = el('div');
  const more = el('button', { type: 'button', text: 'Older events' });
  let before = 0;
  const rows = [];
  async function load() {
    const r = await api(`/api/v1/events?before=${before}&limit=200`);
    for (const e of r.events) rows.push([fmtTime(e.at_ms), e.agent, badge(e.kind), el('code', { text: JSON.stringify(e.detail) })]);
    before = r.next_before;
    more.disabled = r.events.length < 200;
    box.replaceChildren(table(['When', 'Agent', 'Kind', 'Detail'], rows, { empty: 'No event.' }));
  }
  more.addEventListener('click', () => load().catch((e) => box.append(errorBox(e))));
  main.append(box, more);
  await load();
  return null;
}

async function alertsPage(main) {
  main.replaceChildren(el('h1', { text: 'Alerts' }));
  const admin = app.who && app.who.role === 'admin';
  const [alerts, silences] = await Promise.all([api('/api/v1/alerts'), api('/api/v1/silences')]);
  const active = alerts.alerts.filter((a) => a.status !== 'resolved');
  const resolved = alerts.alerts.filter((a) => a.status === 'resolved');
  const row = (a) => [badge(a.status), a.labels.rule, a.severity || a.labels.severity || '', a.summary,
    fmtTime(a.started_ms || a.since_ms), el('code', { text: Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(' ') })];
  const head = ['Status', 'Rule', 'Severity', 'Summary', 'Since', 'Labels'];
  main.append(el('h2', { text: `Active (${active.length})` }), table(head, active.map(row), { empty: 'Nothing firing.' }));
  main.append(el('h2', { text: 'Silences' }));
  const msg = el('p', { role: 'status', class: 'muted' });
  main.append(table(['Matchers', 'Starts', 'Ends', 'Author', 'Comment', ''],
    silences.silences.map((s) => [el('code', { text: s.matchers.join(' ') }), fmtTime(s.starts_ms), fmtTime(s.ends_ms), s.author, s.comment,
      admin && s.ends_ms > Date.now() ? el('button', { type: 'button', text: 'Expire', onclick: async () => {
        try { await api(`/api/v1/silences/${s.id}`, { method: 'DELETE' }); render(); } catch (e) { msg.textContent = e.message; }
      } }) : '']), { empty: 'No silence.' }), msg);
  if (admin) {
    const matchers = el('input', { name: 'matchers', required: true, size: 40, placeholder: 'agent=edge-1 rule=agent-missing' });
    const duration = el('input', { name: 'duration', value: '2h', size: 6 });
    const comment = el('input', { name: 'comment', required: true, size: 30, placeholder: 'maintenance' });
    const form = el('form', { class: 'edit', 'aria-label': 'New silence' },
      el('label', {}, 'Matchers (space separated)', matchers), el('label', {}, 'Duration', duration), el('label', {}, 'Comment', comment),
      el('div', { class: 'actions' }, el('button', { class: 'primary', type: 'submit', text: 'Add silence' })));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        await api('/api/v1/silences', { method: 'POST', body: { matchers: matchers.value.trim().split(/\s+/), duration: duration.value.trim(), comment: comment.value } });
        render();
      } catch (e) { msg.textContent = e.message; msg.className = 'error'; }
    });
    main.append(el('h2', { text: 'New silence' }), form);
  } else {
    main.append(el('p', { class: 'muted', text: 'Creating and expiring silences needs an admin certificate.' }));
  }
  main.append(el('h2', { text: 'Resolved (24 h)' }), table(head, resolved.map(row), { empty: 'None.' }));
  return null;
}

// --------------------------------------------------------- targets page

function targetForm(agents, current, onDone) {
  const v = current || { name: '', target: '', kind: 'ping', port: null, interval: '', timeout: '', retention: null, agents: [], enabled: true };
  const f = {
    name: el('input', { name: 'name', required: true, value: v.name }),
    target: el('input', { name: 'target', required: true, value: v.target, placeholder: '10.1.2.0/28, host.example.net' }),
    kind: el('select', { name: 'kind' }, ['ping', 'tcp', 'trace'].map((k) => el('option', { value: k, text: k, selected: v.kind === k }))),
    port: el('input', { name: 'port', type: 'number', min: 1, max: 65535, value: v.port || '' }),
    interval: el('input', { name: 'interval', value: v.interval || '', placeholder: 'default' }),
    timeout: el('input', { name: 'timeout', value: v.timeout || '', placeholder: 'default' }),
    retention: el('input', { name: 'retention', value: v.retention || '', placeholder: 'collector default' }),
    enabled: el('input', { name: 'enabled', type: 'checkbox', checked: v.enabled }),
  };
  const tenantAgents = agents.filter((a) => !current || a.tenant === current.tenant);
  const boxes = tenantAgents.map((a) => el('input', { type: 'checkbox', name: 'agent', value: a.name, checked: v.agents.includes(a.name) }));
  const msg = el('p', { role: 'status', class: 'muted', id: 'target-form-msg' });
  const form = el('form', { class: 'edit', id: 'target-form', 'aria-label': current ? `Edit ${current.name}` : 'New target' },
    el('label', {}, 'Name', f.name), el('label', {}, 'Host or CIDR', f.target), el('label', {}, 'Probe', f.kind),
    el('label', {}, 'Port (tcp, trace)', f.port), el('label', {}, 'Interval', f.interval), el('label', {}, 'Timeout', f.timeout),
    el('label', {}, 'Retention', f.retention), el('label', {}, 'Enabled', f.enabled),
    el('fieldset', { class: 'agents' }, el('legend', { text: 'Agents (none ticked: all of the tenant)' }),
      boxes.map((b, i) => el('label', {}, b, app.who.operator ? `${tenantAgents[i].tenant}/${tenantAgents[i].name}` : tenantAgents[i].name))),
    el('div', { class: 'actions' }, el('button', { class: 'primary', type: 'submit', text: current ? 'Save' : 'Add target' }),
      current ? el('button', { type: 'button', text: 'Cancel', onclick: onDone }) : null, msg));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: f.name.value, target: f.target.value.trim(), kind: f.kind.value, enabled: f.enabled.checked,
      agents: boxes.filter((b) => b.checked).map((b) => b.value) };
    if (f.port.value) body.port = Number(f.port.value);
    for (const k of ['interval', 'timeout', 'retention']) if (f[k].value.trim()) body[k] = f[k].value.trim();
    try {
      if (current) await api(`/api/v1/targets/${current.id}`, { method: 'PUT', body });
      else await api('/api/v1/targets', { method: 'POST', body });
      onDone();
    } catch (e) { msg.textContent = e.message; msg.className = 'error'; }
  });
  return form;
}

async function targetsPage(main) {
  main.replaceChildren(el('h1', { text: 'Probe targets' }));
  const r = await api('/api/v1/targets/definitions');
  const edit = r.may_edit;
  const box = el('div');
  const rows = r.definitions.map((d) => [
    d.name, el('code', { text: d.target }), d.kind, d.port || '', d.interval, d.timeout, d.retention || 'default',
    d.agents.length ? d.agents.join(', ') : 'all', badge(d.enabled ? 'enabled' : 'disabled'),
    edit ? el('span', {},
      el('button', { type: 'button', text: 'Edit', onclick: () => box.replaceChildren(targetForm(r.agents, d, () => render())) }), ' ',
      el('button', { type: 'button', text: d.enabled ? 'Disable' : 'Enable', onclick: async () => {
        const body = { name: d.name, target: d.target, kind: d.kind, port: d.port || undefined, interval: d.interval, timeout: d.timeout,
          retention: d.retention || undefined, agents: d.agents, enabled: !d.enabled };
        try { await api(`/api/v1/targets/${d.id}`, { method: 'PUT', body }); render(); } catch (e) { box.replaceChildren(errorBox(e)); }
      } }), ' ',
      el('button', { type: 'button', text: 'Delete', onclick: async () => {
        if (!window.confirm(`Delete target ${d.name}?`)) return;
        try { await api(`/api/v1/targets/${d.id}`, { method: 'DELETE' }); render(); } catch (e) { box.replaceChildren(errorBox(e)); }
      } })) : '']);
  main.append(table(['Name', 'Target', 'Probe', 'Port', 'Interval', 'Timeout', 'Retention', 'Agents', 'State', ''], rows,
    { empty: 'No target is managed here yet (targets from config files are not listed).' }));
  if (edit) {
    box.replaceChildren(targetForm(r.agents, null, () => render()));
    main.append(el('h2', { text: 'Add a target' }), box);
  } else {
    main.append(el('p', { class: 'muted', text: 'Read-only: adding and changing targets needs an admin certificate.' }));
  }
  return null;
}

// ------------------------------------------------------ availability strip

// The last 24 h minute by minute (up, down, off-hours, none) as one strip,
// with the share of up time over 24 h, 7 d and 30 d.
function availabilityStrip(v, what) {
  const m = v.minutes;
  const rects = [];
  for (let i = 0; i < m.length;) {
    let j = i;
    while (j < m.length && m[j] === m[i]) j++;
    rects.push(svg('rect', { x: i, y: 0, width: j - i, height: 10, class: `p-${m[i]}` },
      svg('title', {}, document.createTextNode(`${m[i]}: ${fmtClock(v.from_ms + i * v.minute_ms)}–${fmtClock(v.from_ms + j * v.minute_ms)}`))));
    i = j;
  }
  const pct = (k) => (v.availability[k] === null ? '–' : `${v.availability[k].toFixed(v.availability[k] < 100 ? 2 : 0)} %`);
  return el('div', { class: 'availability', 'aria-label': `Availability of ${what}` },
    svg('svg', { viewBox: `0 0 ${m.length} 10`, preserveAspectRatio: 'none', class: 'strip', role: 'img',
      'aria-label': `last 24 hours of ${what}, minute by minute` }, rects),
    el('p', { class: 'muted' }, `Up ${pct('24h')} (24 h), ${pct('7d')} (7 d), ${pct('30d')} (30 d); off-hours and unknown minutes count for neither.`));
}

// ---------------------------------------------------------- checks page

function checkForm(current, onDone) {
  const v = current || { name: '', period: '1d', cron: null, timezone: null, grace: '1h', schedule: null, slug: '' };
  const f = {
    name: el('input', { name: 'name', required: true, value: v.name }),
    period: el('input', { name: 'period', value: v.cron ? '' : (v.period || ''), placeholder: '1d (simple check)' }),
    cron: el('input', { name: 'cron', value: v.cron || '', placeholder: '30 2 * * * (cron check)' }),
    timezone: el('input', { name: 'timezone', value: v.timezone || '', placeholder: 'UTC' }),
    grace: el('input', { name: 'grace', value: v.grace || '', placeholder: '1h' }),
    schedule: el('input', { name: 'schedule', value: v.schedule || '', placeholder: 'always' }),
    slug: el('input', { name: 'slug', value: v.slug || '', placeholder: 'from the name' }),
  };
  const msg = el('p', { role: 'status', class: 'muted', id: 'check-form-msg' });
  const form = el('form', { class: 'edit', id: 'check-form', 'aria-label': current ? `Edit ${current.name}` : 'New check' },
    el('label', {}, 'Name', f.name), el('label', {}, 'Period', f.period), el('label', {}, 'or cron', f.cron),
    el('label', {}, 'Time zone', f.timezone), el('label', {}, 'Grace', f.grace), el('label', {}, 'Schedule', f.schedule),
    el('label', {}, 'Slug', f.slug),
    el('div', { class: 'actions' }, el('button', { class: 'primary', type: 'submit', text: current ? 'Save' : 'Add check' }),
      current ? el('button', { type: 'button', text: 'Cancel', onclick: onDone }) : null, msg));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: f.name.value };
    for (const k of ['period', 'cron', 'timezone', 'grace', 'schedule', 'slug']) if (f[k].value.trim()) body[k] = f[k].value.trim();
    if (body.cron) delete body.period;
    try {
      if (current) { await api(`/api/v1/checks/${current.id}`, { method: 'PUT', body }); onDone(); return; }
      const made = await api('/api/v1/checks', { method: 'POST', body });
      onDone(made);
    } catch (e) { msg.textContent = e.message; msg.className = 'error'; }
  });
  return form;
}

// The ping URL of a new or rotated check: shown once.
function shownOnce(made) {
  const url = made.ping_url || made.token;
  return el('div', { class: 'once', role: 'status', id: 'check-url' },
    el('p', {}, `Ping URL of ${made.check.name} (shown only now; the collector keeps a hash of its token):`),
    el('code', { class: 'url', text: url }));
}

async function checkPings(box, c) {
  const r = await api(`/api/v1/checks/${c.id}/pings?limit=50`);
  const a = await api(`/api/v1/checks/${c.id}/availability`);
  box.replaceChildren(el('h2', { text: `Pings of ${c.name}` }), availabilityStrip(a, c.name), table(['Time', 'Kind', 'Exit', 'Run', 'Source', 'User agent', 'Body'],
    r.pings.map((p) => [fmtTime(p.at_ms), badge(p.kind), p.exit_status ?? '', p.duration_ms == null ? '' : `${(p.duration_ms / 1000).toFixed(1)} s`,
      p.source, p.user_agent, el('code', { text: p.body.slice(0, 120) })]), { empty: 'No ping yet.' }));
}

async function checksPage(main, made) {
  main.replaceChildren(el('h1', { text: 'Checks' }));
  if (made) main.append(shownOnce(made));
  const r = await api('/api/v1/checks');
  const edit = r.may_edit;
  const box = el('div');
  const log = el('div');
  const act = (c, what) => async () => {
    try {
      const v = await api(`/api/v1/checks/${c.id}/${what}`, { method: 'POST', body: {} });
      checksPage(main, what === 'rotate' ? v : null);
    } catch (e) { box.replaceChildren(errorBox(e)); }
  };
  const rows = r.checks.map((c) => [
    c.name, badge(c.state), c.cron ? el('code', { text: `${c.cron} ${c.timezone || 'UTC'}` }) : `every ${c.period}`, c.grace,
    c.schedule || 'always', ago(c.last_ping_ms), fmtTime(c.expected_ms),
    c.last_duration_ms == null ? '–' : `${(c.last_duration_ms / 1000).toFixed(1)} s`,
    el('span', {},
      el('button', { type: 'button', text: 'Pings', onclick: () => checkPings(log, c).catch((e) => log.replaceChildren(errorBox(e))) }),
      edit ? [' ',
        el('button', { type: 'button', text: 'Edit', onclick: () => box.replaceChildren(checkForm(c, () => checksPage(main))) }), ' ',
        el('button', { type: 'button', text: c.state === 'paused' ? 'Resume' : 'Pause', onclick: act(c, c.state === 'paused' ? 'resume' : 'pause') }), ' ',
        el('button', { type: 'button', text: 'New URL', onclick: async () => {
          if (window.confirm(`Give ${c.name} a new ping URL? The current one stops working at once.`)) await act(c, 'rotate')();
        } }), ' ',
        el('button', { type: 'button', text: 'Delete', onclick: async () => {
          if (!window.confirm(`Delete check ${c.name} and its ping log?`)) return;
          try { await api(`/api/v1/checks/${c.id}`, { method: 'DELETE' }); checksPage(main); } catch (e) { box.replaceChildren(errorBox(e)); }
        } })] : null)]);
  main.append(table(['Name', 'State', 'Expects', 'Grace', 'Schedule', 'Last ping', 'Next expected', 'Last run', ''], rows,
    { empty: 'No check yet.' }), log);
  if (edit) {
    box.replaceChildren(checkForm(null, (m) => checksPage(main, m)));
    main.append(el('h2', { text: 'Add a check' }), box);
  } else {
    main.append(el('p', { class: 'muted', text: 'Read-only: adding and changing checks needs an admin certificate.' }));
  }
  return null;
}

// ---------------------------------------------------------------- router

const ROUTES = [
  [/^\/$/, 'grids', (m) => gridsPage(m)],
  [/^\/prefixes\/([^/]+\/\d+)$/, 'grids', (m, p) => gridsPage(m, decodeURIComponent(p))],
  [/^\/address\/([^/]+)$/, 'grids', (m, a) => addressPage(m, decodeURIComponent(a))],
  [/^\/agents$/, 'agents', agentsPage],
  [/^\/agents\/([^/]+)$/, 'agents', (m, n) => agentPage(m, decodeURIComponent(n))],
  [/^\/outages$/, 'outages', outagesPage],
  [/^\/events$/, 'events', eventsPage],
  [/^\/alerts$/, 'alerts', alertsPage],
  [/^\/targets$/, 'targets', targetsPage],
  [/^\/checks$/, 'checks', (m) => checksPage(m)],
];

async function render() {
  if (app.page) { app.page(); app.page = null; }
  hideTip();
  const main = $('#main');
  const path = location.pathname;
  for (const [re, name, fn] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('.top nav a')) {
      if (a.dataset.page === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    document.title = `${name[0].toUpperCase()}${name.slice(1)} · sonde`;
    try {
      app.page = (await fn(main, ...m.slice(1))) || null;
    } catch (e) {
      main.append(errorBox(e));
    }
    return;
  }
  main.replaceChildren(el('h1', { text: 'Not found' }), el('p', {}, el('a', { href: '/', 'data-nav': true, text: 'Back to the grids' })));
}

function navigate(path) {
  if (path !== location.pathname + location.search) history.pushState(null, '', path);
  render();
  $('#main').focus({ preventScroll: true });
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[href]');
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', render);

async function start() {
  try {
    app.who = await api('/api/v1/whoami');
    $('#who').textContent = `${app.who.identity}${app.who.operator ? ' (operator)' : ''}`;
  } catch (e) {
    $('#who').textContent = e.message;
  }
  connect();
  render();
}

start();
