// @ts-check
/* global document, window, sessionStorage, fetch, TextDecoder, URLSearchParams, location, history */
/**
 * The Ferry dashboard (browser code, bundled by esbuild with uPlot). It reads the API with the
 * token kept in sessionStorage (given in the URL fragment `#token=…` or typed in), follows the
 * controller's events as Server-Sent Events over fetch (so the token stays in a header), and
 * draws the selected migration: phase timeline, traffic at IP1/IPt/IP2, DNS answers, held
 * connections, sync, errors. Plain DOM, no framework.
 */
import uPlot from 'uplot';

const PHASES = [
  'planned',
  'ttl-lowered',
  'temp-ip',
  'dns-temp',
  'syncing',
  'preflight',
  'cutover',
  'draining',
  'completed',
];
/** Phases shown only once a migration has entered them (ttl-lowered runs only when the TTL was high). */
const OPTIONAL = new Set(['ttl-lowered']);
const TERMINAL = new Set(['completed', 'failed', 'rolled-back']);

/**
 * Everything the page knows; exposed as `window.ferryState` for tests and curious operators.
 * @type {{ token: string, servers: any[], sites: any[], more: { servers: boolean, sites: boolean },
 *   migrations: any[], selected: string | null,
 *   detail: any, events: Map<string, any[]>, traffic: Map<string, any[]>, lastSeq: number, connected: boolean }}
 */
const state = {
  token: sessionStorage.getItem('ferry.token') ?? '',
  servers: [],
  sites: [],
  more: { servers: false, sites: false },
  migrations: [],
  selected: null,
  detail: null,
  events: new Map(),
  traffic: new Map(),
  lastSeq: 0,
  connected: false,
};
/** @type {any} */ (window).ferryState = state;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {(Node | string)[]} [children]
 */
function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

/** @param {number} ms */
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
/** @param {number} at */
const clock = (at) => new Date(at).toLocaleTimeString();
/** @param {number} n */
const fmtBytes = (n) =>
  n < 1000
    ? `${n} B`
    : n < 1e6
      ? `${(n / 1e3).toFixed(1)} kB`
      : n < 1e9
        ? `${(n / 1e6).toFixed(1)} MB`
        : `${(n / 1e9).toFixed(2)} GB`;

/** @param {string} text @param {boolean} [bad] */
function message(text, bad = false) {
  const m = $('msg');
  m.textContent = text;
  m.className = bad ? 'err' : 'muted';
}

/**
 * Call the API with the token; throws an Error with the API's message on a non-2xx answer.
 * @param {string} path
 * @param {RequestInit} [init]
 */
async function api(path, init = {}) {
  const headers = {
    authorization: `Bearer ${state.token}`,
    ...(init.body ? { 'content-type': 'application/json' } : {}),
  };
  const res = await fetch(path, { ...init, headers: { ...headers, ...(init.headers ?? {}) } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body?.error?.message ?? `${res.status} ${res.statusText}`);
  return body;
}

// ---- lists ----------------------------------------------------------------

/** Servers and sites the page lists at most (the API pages through all of them). */
const LIST_MAX = 1000;

/**
 * The first `max` items of a paged list, following the answers' `next`; `more` when some were left.
 * @param {string} path
 * @param {string} key
 * @param {number} max
 */
async function apiList(path, key, max) {
  /** @type {any[]} */
  const items = [];
  let cursor = '';
  for (;;) {
    const page = await api(
      `${path}?limit=${max - items.length}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    );
    items.push(...page[key]);
    cursor = page.next ?? '';
    if (!cursor) return { items, more: false };
    if (items.length >= max) return { items, more: true };
  }
}

async function loadLists() {
  const [servers, sites, migrations] = await Promise.all([
    apiList('/v1/servers', 'servers', LIST_MAX),
    apiList('/v1/sites', 'sites', LIST_MAX),
    api('/v1/migrations?limit=50'),
  ]);
  state.servers = servers.items;
  state.sites = sites.items;
  state.more = { servers: servers.more, sites: sites.more };
  state.migrations = migrations.migrations;
  renderLists();
}

/**
 * The row saying a list was cut at LIST_MAX.
 * @param {string} what
 * @param {number} columns
 */
const moreRow = (what, columns) =>
  el('tr', { class: 'more' }, [
    el('td', { colspan: String(columns) }, [
      `… the first ${LIST_MAX} ${what} only; GET /v1/${what} pages through them all`,
    ]),
  ]);

function renderLists() {
  const sb = /** @type {HTMLElement} */ ($('servers').querySelector('tbody'));
  sb.replaceChildren(
    ...state.servers.map((s) =>
      el('tr', {}, [
        el('td', {}, [s.id]),
        el('td', {}, [s.sharedIps.join(', ')]),
        el('td', {}, [s.freeTempIps.join(', ') || '—']),
        el('td', {}, [String(s.siteCount)]),
      ]),
    ),
    ...(state.more.servers ? [moreRow('servers', 4)] : []),
  );
  const st = /** @type {HTMLElement} */ ($('sites').querySelector('tbody'));
  st.replaceChildren(
    ...state.sites.map((s) =>
      el('tr', {}, [el('td', {}, [s.domain]), el('td', {}, [s.server]), el('td', {}, [s.migration ?? '—'])]),
    ),
    ...(state.more.sites ? [moreRow('sites', 3)] : []),
  );
  const mb = /** @type {HTMLElement} */ ($('migrations').querySelector('tbody'));
  mb.replaceChildren(
    ...state.migrations.map((m) => {
      const tr = el('tr', { 'data-id': m.id, class: m.id === state.selected ? 'sel' : '' }, [
        el('td', {}, [m.id]),
        el('td', {}, [m.domain]),
        el('td', { class: `phase phase-${m.phase}` }, [m.phase]),
      ]);
      tr.addEventListener('click', () => select(m.id));
      return tr;
    }),
  );
  // The start form: sites not being migrated, and servers other than the site's own.
  const domainSel = /** @type {HTMLSelectElement} */ ($('start-domain'));
  const targetSel = /** @type {HTMLSelectElement} */ ($('start-target'));
  const keepDomain = domainSel.value;
  const keepTarget = targetSel.value;
  domainSel.replaceChildren(
    ...state.sites.filter((s) => !s.migration).map((s) => el('option', { value: s.domain }, [s.domain])),
  );
  if ([...domainSel.options].some((o) => o.value === keepDomain)) domainSel.value = keepDomain;
  const site = state.sites.find((s) => s.domain === domainSel.value);
  targetSel.replaceChildren(
    ...state.servers.filter((s) => s.id !== site?.server).map((s) => el('option', { value: s.id }, [s.id])),
  );
  if ([...targetSel.options].some((o) => o.value === keepTarget)) targetSel.value = keepTarget;
}

let listTimer = /** @type {number | undefined} */ (undefined);
function refreshListsSoon() {
  if (listTimer !== undefined) return;
  listTimer = window.setTimeout(() => {
    listTimer = undefined;
    loadLists().catch((e) => message(String(e.message ?? e), true));
  }, 150);
}

// ---- the selected migration ------------------------------------------------

/** @param {string} id */
async function select(id) {
  state.selected = id;
  location.hash = `migration=${encodeURIComponent(id)}`;
  chartFor = null;
  renderLists();
  await loadDetail();
  try {
    const t = await api(`/v1/migrations/${encodeURIComponent(id)}/traffic`);
    // Samples from the stream may have arrived meanwhile: merge by time.
    const have = state.traffic.get(id) ?? [];
    const seen = new Set(have.map((s) => s.at));
    state.traffic.set(
      id,
      [...have, ...t.samples.filter((/** @type {any} */ s) => !seen.has(s.at))].sort((a, b) => a.at - b.at),
    );
  } catch (e) {
    message(String(/** @type {any} */ (e).message ?? e), true);
  }
  renderDetail();
}

async function loadDetail() {
  if (!state.selected) return;
  state.detail = await api(`/v1/migrations/${encodeURIComponent(state.selected)}`);
  renderDetail();
}

let detailTimer = /** @type {number | undefined} */ (undefined);
function refreshDetailSoon() {
  if (detailTimer !== undefined) return;
  detailTimer = window.setTimeout(() => {
    detailTimer = undefined;
    loadDetail().catch((e) => message(String(e.message ?? e), true));
  }, 150);
}

/** @type {uPlot | null} */
let chart = null;
/** @type {string | null} */
let chartFor = null;

function renderDetail() {
  const d = state.detail;
  $('detail').hidden = !d;
  $('empty').hidden = Boolean(d);
  if (!d) return;
  const events = state.events.get(d.id) ?? [];
  const samples = state.traffic.get(d.id) ?? [];
  $('detail-id').textContent = `${d.id}: ${d.domain} ${d.from} → ${d.to}`;
  const ph = $('detail-phase');
  ph.textContent = d.phase;
  ph.dataset.phase = d.phase;
  ph.className = `phase phase-${d.phase}`;
  const rb = $('rollback-btn');
  rb.hidden = d.phase === 'rolled-back' || d.phase === 'failed';

  // Phase timeline with durations.
  const byName = new Map(d.phases.map((/** @type {any} */ p) => [p.name, p]));
  const names = [...PHASES];
  for (const p of d.phases) if (!names.includes(p.name)) names.push(p.name);
  $('timeline').replaceChildren(
    ...names
      .filter(
        (n) =>
          byName.has(n) ||
          (!OPTIONAL.has(n) && PHASES.includes(n) && (!TERMINAL.has(d.phase) || d.phase === 'completed')),
      )
      .map((n) => {
        const p = /** @type {any} */ (byName.get(n));
        const now = n === d.phase && !TERMINAL.has(n);
        const cls = !p ? '' : n === 'failed' || n === 'rolled-back' ? 'bad' : now ? 'now' : 'done';
        const dur = p && !TERMINAL.has(n) ? secs((p.endedAt ?? Date.now()) - p.startedAt) : '';
        return el('div', { class: cls, title: p ? `${clock(p.startedAt)}` : 'not yet' }, [n, el('br'), dur]);
      }),
  );

  // Current wait, held connections, sync, addresses.
  const lastWait = [...events].reverse().find((e) => e.type === 'wait');
  $('detail-wait').textContent =
    lastWait && !TERMINAL.has(d.phase) && lastWait.data.phase === d.phase
      ? `waiting for ${lastWait.data.what}: ${secs(Math.max(0, lastWait.data.remainingMs - (Date.now() - lastWait.at)))} left at most`
      : '';
  const last = samples[samples.length - 1];
  const held = last ? (last.redirect?.held ?? 0) + last.heldAtOrigin : 0;
  // Sync progress: `sync` events (pass started, progress with bytes and percent, done with files
  // and bytes), else the steps. The bar follows the pass copying now, else counts passes done.
  const syncEvents = events.filter((e) => e.type === 'sync');
  /** @type {Map<string, any>} */
  const passes = new Map();
  for (const e of syncEvents) passes.set(e.data.pass, e.data);
  if (!syncEvents.length) {
    for (const e of events.filter((x) => x.type === 'step' && /sync/.test(x.data.step))) {
      const pass = e.data.step.replace(/-done$/, '');
      passes.set(pass, {
        pass,
        state: /-done$/.test(e.data.step) ? 'done' : 'started',
        ...(e.data.detail ?? {}),
      });
    }
  }
  const done = [...passes.values()].filter((x) => x.state === 'done');
  const expected = Math.max(2, passes.size);
  /** @param {any} x */
  const passText = (x) => {
    if (x.state === 'done') return `${x.files ?? '?'} files, ${x.bytes ?? '?'} bytes`;
    if (x.state !== 'progress') return 'running…';
    const pct = typeof x.percent === 'number' ? `${Math.floor(x.percent)}% · ` : '';
    const files = typeof x.files === 'number' ? ` · ${x.files} files` : '';
    const attempt = typeof x.attempt === 'number' && x.attempt > 1 ? ` (attempt ${x.attempt}, from 0)` : '';
    return `${pct}${fmtBytes(Number(x.bytes ?? 0))} copied${files}${attempt}`;
  };
  const syncText = [...passes.values()].map((x) => `${x.pass}: ${passText(x)}`).join('; ');
  // A pass copying now: its last event is progress, in the phase the migration is still in.
  const copying = TERMINAL.has(d.phase)
    ? undefined
    : [...passes.values()].reverse().find((x) => x.state === 'progress' && x.phase === d.phase);
  const bar = copying
    ? el('span', { class: 'bar', title: `${copying.pass}: ${passText(copying)}` }, [
        // Without a percent (total unknown) the bar is full and faint: it moves only in the text.
        el('i', {
          style:
            typeof copying.percent === 'number'
              ? `width:${Math.max(0, Math.min(100, copying.percent))}%`
              : 'width:100%;opacity:.35',
        }),
      ])
    : el('span', { class: 'bar' }, [
        el('i', { style: `width:${Math.round((Math.min(done.length, expected) / expected) * 100)}%` }),
      ]);
  const lastHeld = [...events].reverse().find((e) => e.type === 'held');
  const heldText = lastHeld
    ? `${lastHeld.data.state === 'holding' ? 'holding' : 'released'}: ${lastHeld.data.redirect ?? 0} connections at IPt, ${lastHeld.data.site ?? 0} requests at the origin`
    : String(held);
  // A web site's databases: what moves, then the last `database` event (lag, catch-up, retry).
  const dbPlan = d.plan.web?.databasePlan;
  const lastDb = [...events].reverse().find((e) => e.type === 'database');
  /** @param {any} x */
  const dbText = (x) => {
    if (x.state === 'lag')
      return `replicating, ${x.lag?.seconds ?? '?'} s behind, ${x.lag?.transactions ?? '?'} transactions to apply${x.lag?.error ? ` · error: ${x.lag.error}` : ''}`;
    if (x.state === 'copied') return `copied (${fmtBytes(Number(x.bytes ?? 0))}), replicating`;
    if (x.state === 'frozen') return `origin frozen at ${x.position}, waiting for the target`;
    if (x.state === 'caught-up') return `caught up in ${x.waitedMs} ms: the target writes`;
    if (x.state === 'catchup-timeout')
      return `catch-up timed out (attempt ${x.attempt} of ${x.attempts}); ${x.retryAt === undefined ? 'the migration rolls back' : `origin writes again, next try at ${clock(x.retryAt)}`}`;
    return String(x.state);
  };
  const dbMoves = dbPlan?.move?.length
    ? `${dbPlan.move.map((/** @type {any} */ m) => `${m.name} (${fmtBytes(m.bytes)})`).join(', ')}`
    : '';
  const dbLeft = dbPlan?.leftInPlace?.length
    ? ` · left in place: ${dbPlan.leftInPlace.map((/** @type {any} */ l) => `${l.name} on ${l.host}`).join(', ')}`
    : '';
  const kv = [
    ['addresses', `IP1 ${d.plan.originIp} · IPt ${d.plan.tempIp} · IP2 ${d.plan.targetIp}`],
    ...(dbMoves || dbLeft
      ? [['databases', `${dbMoves || 'none move'}${dbLeft}${lastDb ? ` · ${dbText(lastDb.data)}` : ''}`]]
      : []),
    ['DNS answer now', last ? last.dns.join(', ') || '—' : '—'],
    ['held connections', heldText],
    ['open at IPt', String(last?.redirect?.activeConnections ?? 0)],
    ['sync', [bar, ' ', syncText || 'not started']],
    ['started', clock(d.createdAt)],
  ];
  $('detail-kv').replaceChildren(
    ...kv.flatMap(([k, v]) => [
      el('dt', {}, [/** @type {string} */ (k)]),
      el('dd', {}, Array.isArray(v) ? v : [v]),
    ]),
  );

  // DNS answers over time, from the samples (and the record changes the journal shows).
  /** @type {{at: number, answer: string}[]} */
  const dns = [];
  for (const s of samples) {
    const a = s.dns.join(', ');
    if (!dns.length || dns[dns.length - 1].answer !== a) dns.push({ at: s.at, answer: a });
  }
  $('dns-history').replaceChildren(
    ...(dns.length
      ? dns.map((x) => el('li', {}, [`${clock(x.at)}  ${x.answer || '(none)'}`]))
      : [el('li', { class: 'muted' }, ['no samples yet'])]),
  );

  const errs = [
    ...(d.errors ?? []).map((/** @type {any} */ e) => `${clock(e.at)} ${e.phase ?? ''} ${e.message}`),
  ];
  for (const r of events.filter((e) => e.type === 'retry').slice(-5))
    errs.push(`${clock(r.at)} retry ${r.data.attempt} of ${r.data.what}: ${r.data.message}`);
  if (d.error && !errs.some((x) => x.includes(d.error))) errs.push(d.error);
  $('errors').replaceChildren(
    ...(errs.length
      ? errs.map((x) => el('li', { class: 'err' }, [x]))
      : [el('li', { class: 'muted' }, ['none'])]),
  );

  drawChart(d.id, samples);
}

/** @param {string} id @param {any[]} samples */
function drawChart(id, samples) {
  const data = /** @type {uPlot.AlignedData} */ ([
    samples.map((s) => s.at / 1000),
    samples.map((s) => s.rps.ip1),
    samples.map((s) => s.rps.ipt),
    samples.map((s) => s.rps.ip2),
    samples.map((s) => (s.redirect?.held ?? 0) + s.heldAtOrigin),
  ]);
  if (chart && chartFor === id) {
    chart.setData(data);
    return;
  }
  chart?.destroy();
  chartFor = id;
  const box = $('chart');
  box.replaceChildren();
  chart = new uPlot(
    {
      width: Math.max(320, box.clientWidth || 640),
      height: 260,
      series: [
        {},
        { label: 'IP1 req/s', stroke: '#d9480f', width: 2 },
        { label: 'IPt req/s', stroke: '#7048e8', width: 2 },
        { label: 'IP2 req/s', stroke: '#2b8a3e', width: 2 },
        { label: 'held', stroke: '#868e96', dash: [4, 4], width: 1 },
      ],
      axes: [{}, { label: 'req/s' }],
    },
    data,
    box,
  );
}

// ---- live events -------------------------------------------------------------

/** @param {string} type @param {any} data */
function onEvent(type, data) {
  if (type === 'sample') {
    const list = state.traffic.get(data.migrationId) ?? [];
    list.push(data);
    if (list.length > 3600) list.shift();
    state.traffic.set(data.migrationId, list);
    if (data.migrationId === state.selected) renderDetail();
    return;
  }
  if (typeof data.seq !== 'number' || typeof data.migrationId !== 'string') return;
  state.lastSeq = Math.max(state.lastSeq, data.seq);
  const list = state.events.get(data.migrationId) ?? [];
  list.push(data);
  if (list.length > 5000) list.shift();
  state.events.set(data.migrationId, list);
  if (type === 'phase' || type === 'migration' || type === 'error' || type === 'evacuation')
    refreshListsSoon();
  if (data.migrationId === state.selected) {
    if (type === 'wait' || type === 'sync' || type === 'held' || type === 'database') renderDetail();
    else if (type === 'phase' || type === 'step' || type === 'error' || type === 'migration')
      refreshDetailSoon();
  }
}

/** Follow `/v1/events` with fetch (EventSource cannot send the token header); reconnect on loss. */
async function follow() {
  for (;;) {
    const token = state.token;
    try {
      const res = await fetch(`/v1/events?since=${state.lastSeq}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      if (!res.ok || !res.body)
        throw new Error(res.status === 401 ? 'the token is not accepted' : `events: ${res.status}`);
      setConnected(true);
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || token !== state.token) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let type = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) type = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (!data) continue;
          try {
            onEvent(type, JSON.parse(data));
          } catch (e) {
            // One odd event must not cut the stream: show it and go on.
            message(`event ${type}: ${/** @type {any} */ (e).message ?? e}`, true);
          }
        }
      }
      reader.cancel().catch(() => undefined);
    } catch (e) {
      setConnected(false, String(/** @type {any} */ (e).message ?? e));
    }
    await new Promise((r) => window.setTimeout(r, 2000));
  }
}

/** @param {boolean} ok @param {string} [why] */
function setConnected(ok, why) {
  state.connected = ok;
  $('conn').textContent = ok ? 'live' : `disconnected${why ? `: ${why}` : ''}`;
}

// ---- actions -----------------------------------------------------------------

$('start').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const domain = /** @type {HTMLSelectElement} */ ($('start-domain')).value;
  const to = /** @type {HTMLSelectElement} */ ($('start-target')).value;
  if (!domain || !to) return message('choose a site and a target server', true);
  try {
    const m = await api('/v1/migrations', { method: 'POST', body: JSON.stringify({ domain, to }) });
    message(`started ${m.id}`);
    await loadLists();
    await select(m.id);
  } catch (e) {
    message(`could not start: ${/** @type {any} */ (e).message}`, true);
  }
});
$('start-domain').addEventListener('change', renderLists);

$('rollback-btn').addEventListener('click', async () => {
  const id = state.selected;
  if (!id || !window.confirm(`Roll back ${id}?`)) return;
  try {
    await api(`/v1/migrations/${encodeURIComponent(id)}/rollback`, { method: 'POST' });
    message(`rollback of ${id} requested`);
    refreshDetailSoon();
  } catch (e) {
    message(`could not roll back: ${/** @type {any} */ (e).message}`, true);
  }
});

function useToken(/** @type {string} */ token) {
  state.token = token.trim();
  sessionStorage.setItem('ferry.token', state.token);
  loadLists()
    .then(() => message('token accepted'))
    .catch((e) => message(String(e.message ?? e), true));
}
$('token-save').addEventListener('click', () => useToken(/** @type {HTMLInputElement} */ ($('token')).value));

// ---- start -------------------------------------------------------------------

// A token in the fragment (`#token=…`, as `ferry demo --serve` prints) goes to sessionStorage and
// leaves the address bar at once.
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get('token')) {
  state.token = /** @type {string} */ (frag.get('token'));
  sessionStorage.setItem('ferry.token', state.token);
  history.replaceState(null, '', location.pathname);
}
/** @type {HTMLInputElement} */ ($('token')).value = state.token;
window.setInterval(() => {
  if (state.detail && !TERMINAL.has(state.detail.phase)) renderDetail(); // countdown and durations tick
}, 1000);
if (state.token) {
  loadLists().catch((e) => message(String(e.message ?? e), true));
  const wanted = frag.get('migration');
  if (wanted) select(wanted).catch(() => undefined);
} else {
  message('enter a token to see the controller', true);
}
void follow();
