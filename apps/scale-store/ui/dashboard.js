// The scale-store dashboard: the store's keys (live from a watch), its last events (every name,
// from onPrefix('')) and every manager that reports to it (manager.report_to: snapshots under
// `_scale/managers/`, then the `_scale/managers` events), with a drain button for the workers of
// a manager that obeys drain orders.
//
// Why it is written this way:
// - Served by the store under a Content-Security-Policy that allows only 'self': no inline
//   script or style, no framework, no build step; progress bars are <progress> elements, so no
//   style is ever set from script.
// - Every stored value, event payload and name comes from whoever writes to the store: it is put
//   in the page with textContent (and title) only, never parsed as HTML.
// - The token (`/ui/?token=T`) lives in this module's memory only: it is removed from the address
//   bar at once and never stored in a cookie or in storage.
// - scale.js reconnects its stream by itself but says nothing about it; the page holds a second,
//   idle stream of its own (one event part nobody emits) whose end says at once that the store
//   went away, and whose reopening says it is back: that is what the status line reports.
import { SharedMemory, SharedEventEmitter, Unauthorized, ConnectionError, Compacted } from './scale.js';

const MANAGERS_EVENT = '_scale/managers';
const MANAGERS_PREFIX = '_scale/managers/';
const ORDERS_PREFIX = '_scale/orders/';
const LIVENESS_EVENT = '_scale/dashboard/liveness';
const EVENTS_KEPT = 200;
const KEY_ROWS_SHOWN = 500;
const STALE_AFTER_MS = 6000; // a reporting manager beats at least every 2 s
const ENDED_MANAGER_SHOWN_MS = 15_000;
const ENDED_CALLS_SHOWN = 5;
const ENDED_CALL_SHOWN_MS = 60_000;
const UNREACHABLE_AFTER_MS = 10_000; // "reconnecting" becomes "unreachable"
const CONNECT_TIMEOUT_MS = 5000;
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 2000;
const VALUE_CHARS_SHOWN = 300;
const TITLE_CHARS = 4000;

const origin = window.location.origin;
const token = takeToken();
const memory = new SharedMemory(origin, { token });
const events = new SharedEventEmitter(origin, { token });

/** Reads `?token=` and removes it from the address bar (and so from the history). */
function takeToken() {
  const query = new URLSearchParams(window.location.search);
  const value = query.get('token') ?? '';
  if (query.has('token')) {
    query.delete('token');
    const rest = query.toString();
    window.history.replaceState(window.history.state, '', `${window.location.pathname}${rest ? `?${rest}` : ''}${window.location.hash}`);
  }
  return value;
}

const byId = (id) => document.getElementById(id);

/** An element with a class and text (text only through textContent). */
function element(tag, className = '', text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

/** A JSON value as text: shortened for the cell, whole (up to a bound) in the title. */
function setJsonText(node, value) {
  let text = JSON.stringify(value);
  if (text === undefined) text = String(value);
  node.textContent = text.length > VALUE_CHARS_SHOWN ? `${text.slice(0, VALUE_CHARS_SHOWN)}…` : text;
  node.title = text.length > TITLE_CHARS ? `${text.slice(0, TITLE_CHARS)}…` : text;
}

function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 1) return 'now';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}

function formatDuration(ms) {
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function formatClock(ms) {
  const date = new Date(ms);
  const two = (n) => String(n).padStart(2, '0');
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${String(date.getMilliseconds()).padStart(3, '0')}`;
}

/**
 * Children of `parent` kept in step with a list of items by key: an item's element is made once
 * and updated in place, so a button under the pointer survives the next report.
 */
class KeyedChildren {
  constructor(parent, create, update) {
    this.parent = parent;
    this.create = create;
    this.update = update;
    this.nodes = new Map();
  }

  set(items, keyOf) {
    const wanted = new Set();
    let previous = null;
    for (const item of items) {
      const key = keyOf(item);
      wanted.add(key);
      let node = this.nodes.get(key);
      if (!node) {
        node = this.create(item);
        this.nodes.set(key, node);
      }
      this.update(node, item);
      const expected = previous ? previous.nextSibling : this.parent.firstChild;
      if (expected !== node) this.parent.insertBefore(node, expected);
      previous = node;
    }
    for (const [key, node] of this.nodes)
      if (!wanted.has(key)) {
        node.remove();
        this.nodes.delete(key);
      }
  }

  clear() {
    this.set([], () => '');
  }
}

// --- The status line and the connection ---------------------------------------------------

const statusLine = byId('status');
let locked = false; // a wrong token: nothing more is shown

function setStatus(state, text) {
  if (locked) return;
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

/** A 401: say what to do, show no data, and stop. */
function tokenProblem() {
  if (locked) return;
  setStatus('token', "the token is wrong or missing: open /ui/?token=<the store's --token>");
  locked = true;
  keys.clear();
  eventList.clear();
  managers.clear();
}

/** Whether the store is reachable now, and a Promise for the next time it is. */
const connection = {
  up: false,
  waiters: [],
  whenUp() {
    return this.up ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  },
  set(up) {
    this.up = up;
    if (up) for (const resolve of this.waiters.splice(0)) resolve();
  },
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Holds the liveness stream open; its status, reopened with backoff, drives the status line. */
async function followConnection() {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const url = `${origin}/v1/stream?event=${encodeURIComponent(LIVENESS_EVENT)}`;
  let everConnected = false;
  let lostAt = 0;
  let delay = RETRY_FIRST_MS;
  while (!locked) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), CONNECT_TIMEOUT_MS);
    let response = null;
    let why = '';
    try {
      response = await fetch(url, { headers, cache: 'no-store', signal: controller.signal });
    } catch (error) {
      why = error?.message ?? String(error);
    } finally {
      clearTimeout(timer);
    }
    if (response?.status === 401) {
      response.body?.cancel().catch(() => {});
      tokenProblem();
      return;
    }
    if (response?.ok) {
      delay = RETRY_FIRST_MS;
      if (everConnected) setStatus('reconnected', `connected to ${origin}: reconnected at ${formatClock(Date.now())}`);
      else setStatus('connected', `connected to ${origin}`);
      everConnected = true;
      connection.set(true);
      try {
        const reader = response.body.getReader();
        while (!(await reader.read()).done);
      } catch {
        // the connection broke: the same as its end
      }
      connection.set(false);
      lostAt = Date.now();
      setStatus('reconnecting', `reconnecting to ${origin}…`);
    } else {
      if (response) {
        why = `HTTP ${response.status}`;
        response.body?.cancel().catch(() => {});
      }
      if (!everConnected || Date.now() - lostAt > UNREACHABLE_AFTER_MS)
        setStatus('unreachable', `the store at ${origin} is unreachable (${why}); retrying`);
    }
    await sleep(delay * (0.5 + Math.random() / 2));
    delay = Math.min(delay * 2, RETRY_MAX_MS);
  }
}

/** What a failed call means for the page: a 401 locks it, anything else is said on the status line. */
function failed(error, what) {
  if (error instanceof Unauthorized) tokenProblem();
  else setStatus('error', `${what}: ${error?.message ?? error}`);
}

/** Runs `load` until it succeeds, waiting for the store after each ConnectionError. */
async function whenReachable(load, what) {
  for (;;) {
    try {
      return await load();
    } catch (error) {
      if (!(error instanceof ConnectionError)) {
        failed(error, what);
        return undefined;
      }
      connection.set(false);
      await connection.whenUp();
      await sleep(RETRY_FIRST_MS);
    }
  }
}

// --- Keys --------------------------------------------------------------------------------

const keys = {
  entries: new Map(), // key -> {key, value, revision, timestampMs}
  erasedAt: new Map(), // key -> revision of its erase (a list read before it must not bring it back)
  subscription: null,
  generation: 0,
  scheduled: false,
  rows: new KeyedChildren(
    byId('key-rows'),
    () => {
      const row = element('tr');
      row.append(element('td', 'key'), element('td', 'value'), element('td', 'num'), element('td', 'num age'));
      return row;
    },
    (row, entry) => {
      const [key, value, revision, age] = row.children;
      if (key.textContent !== entry.key) key.textContent = entry.key;
      if (row.revision !== entry.revision) {
        setJsonText(value, entry.value);
        revision.textContent = String(entry.revision);
        row.revision = entry.revision;
      }
      age.dataset.time = String(entry.timestampMs);
      age.textContent = formatAge(Date.now() - entry.timestampMs);
    },
  ),

  /** Watches `prefix` (first, so nothing is missed), then reads what is there. */
  async show(prefix) {
    const generation = ++this.generation;
    delete byId('keys').dataset.ready;
    this.subscription?.cancel();
    this.entries.clear();
    this.erasedAt.clear();
    this.render();
    if (locked) return;
    const subscription = memory.watch(prefix, (change) => this.apply(change), {
      onError: (error) => {
        if (error instanceof Compacted && generation === this.generation) this.show(prefix);
        else failed(error, `the watch of '${prefix}'`);
      },
    });
    this.subscription = subscription;
    try {
      await subscription.ready;
    } catch (error) {
      if (!(error instanceof ConnectionError)) return; // onError said it
    }
    const entries = await whenReachable(() => memory.list(prefix), `listing '${prefix}'`);
    if (generation !== this.generation || !entries) return;
    for (const entry of entries) this.apply({ ...entry, erased: false });
    byId('keys').dataset.ready = 'true'; // the watch is in place and the keys are read
  },

  apply(change) {
    if (locked) return;
    const current = this.entries.get(change.key);
    if ((current && current.revision >= change.revision) || (this.erasedAt.get(change.key) ?? 0) >= change.revision) return;
    if (change.erased) {
      this.entries.delete(change.key);
      this.erasedAt.set(change.key, change.revision);
    } else {
      this.entries.set(change.key, change);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.render(), 15); // one render for a burst of changes
    }
  },

  render() {
    this.scheduled = false;
    const sorted = [...this.entries.keys()].sort();
    const shown = sorted.slice(0, KEY_ROWS_SHOWN).map((key) => this.entries.get(key));
    this.rows.set(shown, (entry) => entry.key);
    byId('key-count').textContent = sorted.length ? `(${sorted.length})` : '';
    byId('keys-more').textContent =
      sorted.length > KEY_ROWS_SHOWN
        ? `${sorted.length - KEY_ROWS_SHOWN} more keys not shown: narrow the prefix`
        : sorted.length === 0
          ? 'No key here yet.'
          : '';
  },

  tick(now) {
    for (const cell of byId('key-rows').querySelectorAll('td.age')) cell.textContent = formatAge(now - Number(cell.dataset.time));
  },

  clear() {
    this.subscription?.cancel();
    ++this.generation;
    this.entries.clear();
    this.render();
    byId('keys-more').textContent = '';
  },
};

// --- Events ------------------------------------------------------------------------------

const eventList = {
  kept: [], // newest last: {time, name, payload}
  filter: '',
  body: byId('event-rows'),

  add(name, payload) {
    if (locked) return;
    const item = { time: Date.now(), name, payload };
    this.kept.push(item);
    if (this.kept.length > EVENTS_KEPT) this.kept.shift();
    if (name.startsWith(this.filter)) {
      this.body.prepend(this.row(item));
      while (this.body.childElementCount > EVENTS_KEPT) this.body.lastElementChild.remove();
    }
    this.count();
  },

  row(item) {
    const row = element('tr');
    const payload = element('td', 'value');
    setJsonText(payload, item.payload);
    row.append(element('td', 'time', formatClock(item.time)), element('td', 'name', item.name), payload);
    return row;
  },

  setFilter(filter) {
    this.filter = filter;
    const rows = this.kept.filter((item) => item.name.startsWith(filter)).reverse().map((item) => this.row(item));
    this.body.replaceChildren(...rows);
    this.count();
  },

  count() {
    byId('event-count').textContent = this.kept.length ? `(last ${this.kept.length})` : '';
  },

  clear() {
    this.kept = [];
    this.body.replaceChildren();
    this.count();
  },
};

// --- Managers ----------------------------------------------------------------------------

/** One reporting manager's card, updated in place from its reports. */
class ManagerCard {
  constructor(name) {
    this.name = name;
    this.report = null;
    this.lastSeen = Date.now();
    this.ended = false;
    this.endedAt = 0;
    this.calls = new Map(); // id -> {call, endedAt}
    this.orders = new Map(); // order id -> {worker, state, text}
    this.pendingDrains = new Set();

    this.node = element('article', 'manager');
    const header = element('header');
    this.title = element('h3', '', name);
    this.kind = element('span', 'kind');
    this.where = element('span', 'where');
    this.badge = element('span', 'badge');
    header.append(this.title, this.kind, this.where, this.badge);
    this.stats = element('dl', 'stats');
    this.callBox = element('div', 'calls');
    this.callsEmpty = element('p', 'empty', 'No call running.');
    this.workerTable = element('table', 'workers');
    const head = element('thead');
    const headRow = element('tr');
    for (const title of ['Worker', 'Host', 'Site', 'PID', 'Concurrency', 'Heartbeat', 'State', ''])
      headRow.append(element('th', '', title));
    head.append(headRow);
    this.workerBody = element('tbody');
    this.workerTable.append(head, this.workerBody);
    this.orderList = element('ul', 'orders');
    this.node.append(header, this.stats, this.callBox, this.callsEmpty, this.workerTable, this.orderList);

    this.callItems = new KeyedChildren(
      this.callBox,
      () => {
        const box = element('div', 'call');
        box.append(element('span', 'label'), element('progress'), element('span', 'detail'));
        box.children[1].max = 1;
        return box;
      },
      (box, { call }) => {
        const [label, bar, detail] = box.children;
        const progress = call.progress ?? {};
        const fraction = Math.min(1, Math.max(0, Number(progress.fraction) || 0));
        box.dataset.state = call.state;
        label.textContent = `call ${call.id} · ${call.state}`;
        bar.value = fraction;
        const parts = [`${progress.items_done ?? 0} / ${progress.items_total ?? 0} items`, `${Math.floor(fraction * 100)}%`];
        if (call.state === 'running') {
          if (progress.eta_ms !== null && progress.eta_ms !== undefined) parts.push(`ETA ${formatDuration(progress.eta_ms)}`);
          else parts.push('ETA unknown');
        }
        if (progress.elapsed_ms !== undefined) parts.push(`${formatDuration(progress.elapsed_ms)} elapsed`);
        if (progress.workers !== undefined) parts.push(`${progress.workers} workers`);
        detail.textContent = parts.join(' · ');
      },
    );

    this.workerRows = new KeyedChildren(
      this.workerBody,
      (worker) => {
        const row = element('tr');
        for (let i = 0; i < 7; ++i) row.append(element('td', i === 3 || i === 4 || i === 5 ? 'num' : ''));
        const action = element('td');
        const button = element('button', 'drain', 'Drain');
        button.type = 'button';
        button.addEventListener('click', () => this.drain(button.dataset.worker));
        action.append(button);
        row.append(action);
        row.dataset.worker = worker.id;
        return row;
      },
      (row, worker) => {
        const cells = row.children;
        cells[0].textContent = String(worker.id);
        cells[1].textContent = String(worker.host ?? '');
        cells[2].textContent = String(worker.site ?? '');
        cells[3].textContent = worker.pid === undefined || worker.pid === null ? '' : String(worker.pid);
        cells[4].textContent = worker.concurrency === undefined ? '' : String(worker.concurrency);
        cells[5].textContent =
          worker.heartbeat_age_ms === null || worker.heartbeat_age_ms === undefined ? '—' : `${Math.round(worker.heartbeat_age_ms)} ms ago`;
        cells[6].textContent = worker.draining ? 'draining' : 'active';
        const button = cells[7].firstChild;
        button.dataset.worker = String(worker.id);
        button.hidden = !this.report?.orders;
        button.disabled = Boolean(worker.draining) || this.pendingDrains.has(String(worker.id)) || this.ended;
      },
    );
  }

  /** A report newer than the one shown replaces it; a report's calls update the bars. */
  apply(report, seenAt) {
    const current = this.report;
    if (current && (report.time_ms < current.time_ms || (report.time_ms === current.time_ms && report.seq <= current.seq))) return;
    this.report = report;
    this.lastSeen = seenAt;
    this.ended = false;
    const listed = new Set();
    for (const call of Array.isArray(report.calls) ? report.calls : []) {
      listed.add(call.id);
      const known = this.calls.get(call.id);
      const endedAt = call.state === 'running' ? 0 : (known?.endedAt || seenAt);
      this.calls.set(call.id, { call, endedAt });
    }
    for (const [id, item] of this.calls)
      if (!listed.has(id) && item.endedAt === 0) this.calls.delete(id); // its end was missed (a reconnect)
    for (const worker of Array.isArray(report.workers) ? report.workers : [])
      if (worker.draining) this.pendingDrains.delete(String(worker.id));
    this.render(seenAt);
  }

  end(seenAt) {
    this.ended = true;
    this.endedAt = seenAt;
    this.lastSeen = seenAt;
    for (const item of this.calls.values()) if (item.endedAt === 0) this.calls.delete(item.call.id);
    this.render(seenAt);
  }

  orderResult(result) {
    const order = this.orders.get(result.order) ?? { worker: result.drain ?? '' };
    if (result.done) {
      order.state = 'done';
      order.text = `drain of ${result.drain ?? order.worker}: done`;
    } else {
      order.state = 'failed';
      order.text = `drain of ${order.worker || result.drain || '?'}: ${result.error ?? 'failed'}${result.type ? ` (${result.type})` : ''}`;
    }
    this.pendingDrains.delete(String(order.worker));
    this.orders.set(result.order, order);
    this.render(Date.now());
  }

  /** Writes a drain order; the manager obeys it, erases the key and emits the result. */
  async drain(worker) {
    const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    this.orders.set(id, { worker, state: 'sent', text: `drain of ${worker}: sent` });
    this.pendingDrains.add(worker);
    this.render(Date.now());
    try {
      await memory.set(`${ORDERS_PREFIX}${this.name}/${id}`, { drain: worker });
    } catch (error) {
      this.pendingDrains.delete(worker);
      this.orders.set(id, { worker, state: 'failed', text: `drain of ${worker}: ${error?.message ?? error}` });
      if (error instanceof Unauthorized) tokenProblem();
      else this.render(Date.now());
    }
  }

  render(now) {
    const report = this.report ?? {};
    this.kind.textContent = report.kind ?? '';
    this.where.textContent = report.host || report.pid ? `${report.host ?? ''} · pid ${report.pid ?? '?'}` : '';
    const stale = !this.ended && now - this.lastSeen > STALE_AFTER_MS;
    this.node.classList.toggle('stale', stale);
    this.node.classList.toggle('ended', this.ended);
    this.badge.textContent = this.ended ? 'ended' : stale ? `stale: no report for ${formatAge(now - this.lastSeen)}` : 'live';

    const stats = report.stats && typeof report.stats === 'object' ? Object.entries(report.stats) : [];
    const statNodes = [];
    for (const [name, value] of stats) {
      const pair = element('div');
      const term = element('dt', '', name);
      const detail = element('dd');
      setJsonText(detail, value);
      pair.append(term, detail);
      statNodes.push(pair);
    }
    this.stats.replaceChildren(...statNodes);

    for (const [id, item] of this.calls) if (item.endedAt && now - item.endedAt > ENDED_CALL_SHOWN_MS) this.calls.delete(id);
    const ended = [...this.calls.values()].filter((item) => item.endedAt).sort((a, b) => b.endedAt - a.endedAt);
    for (const item of ended.slice(ENDED_CALLS_SHOWN)) this.calls.delete(item.call.id);
    const calls = [...this.calls.values()].sort((a, b) => Number(b.call.id) - Number(a.call.id));
    this.callItems.set(calls, (item) => String(item.call.id));
    this.callsEmpty.hidden = calls.length > 0;

    const workers = Array.isArray(report.workers) ? report.workers : [];
    this.workerRows.set(workers, (worker) => String(worker.id));
    this.workerTable.hidden = workers.length === 0;

    const orders = [...this.orders.values()].slice(-5);
    this.orderList.replaceChildren(...orders.map((order) => element('li', order.state, order.text)));
  }
}

const managers = {
  cards: new Map(),
  list: new KeyedChildren(
    byId('manager-list'),
    (card) => card.node,
    () => {},
  ),

  /** A payload of `_scale/managers` (an event) or a `_scale/managers/<name>` snapshot. */
  receive(payload) {
    if (locked || !payload || typeof payload.name !== 'string') return;
    const now = Date.now();
    let card = this.cards.get(payload.name);
    if (payload.order !== undefined) {
      card?.orderResult(payload);
      return;
    }
    if (payload.ended) {
      card?.end(now);
      return;
    }
    if (!card) {
      card = new ManagerCard(payload.name);
      this.cards.set(payload.name, card);
    }
    card.apply(payload, now);
    this.render();
  },

  render() {
    const cards = [...this.cards.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.list.set(cards, (card) => card.name);
    byId('managers-empty').hidden = cards.length > 0;
  },

  tick(now) {
    for (const [name, card] of this.cards) {
      if (card.ended && now - card.endedAt > ENDED_MANAGER_SHOWN_MS) this.cards.delete(name);
      else card.render(now);
    }
    this.render();
  },

  clear() {
    this.cards.clear();
    this.render();
    byId('managers-empty').hidden = true;
  },
};

// --- Start -------------------------------------------------------------------------------

/** Subscribes to every event first (nothing after it is missed), then reads the snapshots. */
async function followEvents() {
  const subscription = events.onPrefix(
    '',
    (payload, name) => {
      eventList.add(name, payload);
      if (name === MANAGERS_EVENT) managers.receive(payload);
    },
    { onError: (error) => failed(error, 'the event subscription') },
  );
  try {
    await subscription.ready;
    byId('events').dataset.ready = 'true'; // every later emit is shown
  } catch (error) {
    if (!(error instanceof ConnectionError)) return;
  }
  const snapshots = await whenReachable(() => memory.list(MANAGERS_PREFIX), 'listing the managers');
  for (const entry of snapshots ?? []) managers.receive(entry.value);
  if (snapshots) byId('managers').dataset.ready = 'true';
}

let prefixTimer = null;
byId('key-prefix').addEventListener('input', (event) => {
  clearTimeout(prefixTimer);
  const prefix = event.target.value;
  prefixTimer = setTimeout(() => keys.show(prefix), 250);
});
byId('event-prefix').addEventListener('input', (event) => eventList.setFilter(event.target.value));

setStatus('connecting', `connecting to ${origin}…`);
managers.render();
setInterval(() => {
  if (locked) return;
  const now = Date.now();
  keys.tick(now);
  managers.tick(now);
}, 1000);
followConnection();
followEvents();
keys.show(byId('key-prefix').value);
