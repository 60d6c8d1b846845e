// The dashboard (/ui/) in a real browser: headless Debian chromium driven by puppeteer-core (from
// js/node_modules; it never downloads a browser) against real scale-stores this file starts on
// free loopback ports, with tests/ui_app.cpp as the C++ program that writes, emits and runs a map
// on a process pool that reports to the store. Everything it starts is stopped by its pid.
//
//   SCALE_STORE_BIN=build/apps/scale-store/scale-store UI_APP_BIN=build/tests/ui_app \
//   UI_SCREENSHOT=build/tests/ui-dashboard.png node --test tests/ui/
//
// ctest runs it as ui_browser_test; CHROMIUM_BIN overrides /usr/bin/chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';

import { SharedMemory, SharedEventEmitter } from '../../js/scale.js';
import { startStore, dataDir } from '../../js/support/store.mjs';

// puppeteer-core lives in js/node_modules (js/package-lock.json pins it), not beside this file.
const puppeteer = createRequire(new URL('../../js/package.json', import.meta.url))('puppeteer-core');

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const UI_APP = process.env.UI_APP_BIN ?? 'ui_app';
const SCREENSHOT = process.env.UI_SCREENSHOT ?? '';
// Generous against the targets (1 s for a key, a report every 250 ms) for ASan and a loaded CI.
const SHOWS_MS = 10_000;

let browser = null;
let profile = '';

before(async () => {
  profile = mkdtempSync(join(tmpdir(), 'scale-ui-chromium-'));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-dev-shm-usage',
    ],
  });
});

after(async () => {
  const pid = browser?.process()?.pid;
  try {
    await browser?.close();
  } finally {
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL'); // already gone after a clean close
      } catch {
        // ended
      }
    }
    if (profile) rmSync(profile, { recursive: true, force: true });
  }
});

/** A fresh browser context (no shared storage) with the dashboard of `url` open; dialogs are recorded. */
async function openDashboard(url, query = '') {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.dialogs = [];
  page.errors = [];
  page.on('dialog', async (dialog) => {
    page.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  page.on('pageerror', (error) => page.errors.push(error.message));
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(`${url}/ui/${query}`, { waitUntil: 'load' });
  page.close = async () => context.close();
  return page;
}

/** Resolves once the page's keys watch and event subscription are in place. */
async function dashboardReady(page) {
  await page.waitForSelector('#keys[data-ready="true"]', { timeout: SHOWS_MS });
  await page.waitForSelector('#events[data-ready="true"]', { timeout: SHOWS_MS });
}

const statusOf = (page) => page.$eval('#status', (node) => ({ state: node.dataset.state, text: node.textContent }));

/** The rows of the keys table as {key, value, revision}. */
const keyRows = (page) =>
  page.$$eval('#key-rows tr', (rows) =>
    rows.map((row) => ({ key: row.children[0].textContent, value: row.children[1].textContent, revision: Number(row.children[2].textContent) })),
  );

/** Resolves once the keys table shows `key` with the text `value`. */
async function keyShows(page, key, value, timeout = SHOWS_MS) {
  await page.waitForFunction(
    (k, v) => [...document.querySelectorAll('#key-rows tr')].some((row) => row.children[0].textContent === k && row.children[1].textContent === v),
    { timeout, polling: 'mutation' },
    key,
    value,
  );
}

/** tests/ui_app started against `url`: `send(line)` resolves to its answer; `stop()` ends it. */
async function startApp(url, name = 'ui-test') {
  const child = spawn(UI_APP, [url, name], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  const waiting = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (waiting.length) waiting.shift()(line);
    else lines.push(line);
  });
  const next = () =>
    new Promise((resolve, reject) => {
      if (lines.length) return resolve(lines.shift());
      const timer = setTimeout(() => reject(new Error('ui_app gave no answer within 60 s')), 60_000);
      waiting.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.once('error', (error) => waiting.splice(0).forEach((resolve) => resolve(`error: cannot run ${UI_APP} (set UI_APP_BIN): ${error.message}`)));
  const first = await next();
  assert.equal(first, 'ready', `ui_app did not start: ${first}`);
  return {
    pid: child.pid,
    async send(line) {
      child.stdin.write(`${line}\n`);
      const answer = await next();
      assert.match(answer, /^ok\b/, `ui_app answered '${answer}' to '${line}'`);
      return answer;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin.end('quit\n');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

test('a key written by a C++ program shows within 1 s of its write, and an emitted event with its payload', async () => {
  const store = await startStore();
  const app = await startApp(store.url);
  const page = await openDashboard(store.url);
  try {
    await dashboardReady(page);
    assert.equal((await statusOf(page)).state, 'connected');
    await app.send('set ui/answer {"answer": 42}');
    const written = Date.now();
    await keyShows(page, 'ui/answer', '{"answer":42}', 1000);
    assert.ok(Date.now() - written <= 1000);
    const [row] = (await keyRows(page)).filter((r) => r.key === 'ui/answer');
    assert.ok(row.revision >= 1);

    await app.send('emit ui/hello {"n": 7, "text": "from C++"}');
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll('#event-rows tr')].some(
          (row) => row.children[1].textContent === 'ui/hello' && row.children[2].textContent === '{"n":7,"text":"from C++"}',
        ),
      { timeout: SHOWS_MS, polling: 'mutation' },
    );
    // A prefix filter reads the keys under it and watches them.
    await app.send('set other/key 1');
    await keyShows(page, 'other/key', '1');
    await page.type('#key-prefix', 'ui/');
    await page.waitForFunction(() => [...document.querySelectorAll('#key-rows tr')].every((row) => row.children[0].textContent.startsWith('ui/')), {
      timeout: SHOWS_MS,
    });
    await page.waitForSelector('#keys[data-ready="true"]', { timeout: SHOWS_MS });
    await app.send('set ui/second "two"');
    await keyShows(page, 'ui/second', '"two"', 1000);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.close();
    await app.stop();
    await store.stop();
  }
});

test('a reporting map shows its manager, and its call\'s progress bar moves and reaches 100%', async () => {
  const store = await startStore();
  const app = await startApp(store.url, 'ui-test');
  const page = await openDashboard(store.url);
  try {
    await dashboardReady(page);
    await app.send('set jobs/current {"items": 24}');
    const mapped = app.send('map 24 250'); // 24 items of 250 ms on 2 workers: about 3 s
    // The bar is seen part way (a report while the call runs), then full.
    // Resolves to the value of a running call's bar once one is past `low` and short of 1.
    const partWay = async (low) => {
      const found = await page.waitForFunction(
        (least) =>
          [...document.querySelectorAll('.manager .call[data-state="running"] progress')].map((bar) => bar.value).find((value) => value > least && value < 1) ??
          false,
        { timeout: SHOWS_MS, polling: 50 },
        low,
      );
      return found.jsonValue();
    };
    const firstSeen = await partWay(0);
    // The picture is better a third of the way; a machine too slow to show that gets an earlier one.
    await partWay(0.3).catch(() => {});
    const card = await page.$eval('.manager', (node) => ({
      name: node.querySelector('h3').textContent,
      kind: node.querySelector('.kind').textContent,
      badge: node.querySelector('.badge').textContent,
      stats: [...node.querySelectorAll('.stats dt')].map((term) => term.textContent),
    }));
    assert.deepEqual([card.name, card.kind, card.badge], ['ui-test', 'process_pool', 'live']);
    assert.ok(card.stats.includes('tasks_done') && card.stats.includes('workers_alive'), card.stats.join(','));
    if (SCREENSHOT) {
      mkdirSync(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    }
    assert.equal(await mapped, `ok ${(24 * 25) / 2}`); // the sum of 1..24
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll('.manager .call')].some(
          (call) => call.dataset.state === 'done' && call.querySelector('progress').value === 1 && call.querySelector('.detail').textContent.startsWith('24 / 24 items · 100%'),
        ),
      { timeout: SHOWS_MS, polling: 'mutation' },
    );
    assert.ok(firstSeen > 0 && firstSeen < 1, `the bar was first seen at ${firstSeen}`); // then at 1: it moved

    // The manager's end: its key is erased and its last event marks the card as ended.
    await app.stop();
    await page.waitForFunction(() => document.querySelector('.manager .badge')?.textContent === 'ended', { timeout: SHOWS_MS, polling: 'mutation' });
    assert.deepEqual(page.dialogs, []);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.close();
    await app.stop();
    await store.stop();
  }
});

test('a wrong or missing token shows the token message and no data; the right one is taken out of the address bar', async () => {
  const store = await startStore({ token: 'right-token' });
  try {
    await new SharedMemory(store.url, { token: 'right-token' }).set('secret/key', 'hidden');
    for (const query of ['?token=wrong', '']) {
      const page = await openDashboard(store.url, query);
      try {
        await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'token', { timeout: SHOWS_MS });
        const status = await statusOf(page);
        assert.equal(status.text, "the token is wrong or missing: open /ui/?token=<the store's --token>");
        assert.equal((await keyRows(page)).length, 0);
        assert.equal(await page.$$eval('#event-rows tr, .manager', (nodes) => nodes.length), 0);
        assert.ok(!page.url().includes('token='), page.url());
      } finally {
        await page.close();
      }
    }
    const page = await openDashboard(store.url, '?token=right-token');
    try {
      await dashboardReady(page);
      await keyShows(page, 'secret/key', '"hidden"');
      assert.equal(page.url(), `${store.url}/ui/`);
      assert.equal((await statusOf(page)).state, 'connected');
    } finally {
      await page.close();
    }
  } finally {
    await store.stop();
  }
});

test('a stored "<img src=x onerror=alert(1)>" shows as text: no element is made and nothing runs', async () => {
  const store = await startStore();
  const page = await openDashboard(store.url);
  try {
    await dashboardReady(page);
    const html = '<img src=x onerror=alert(1)>';
    const memory = new SharedMemory(store.url);
    await memory.set('xss/value', html);
    await memory.set(`xss/${html}`, { [html]: html });
    await new SharedEventEmitter(store.url).emit(`xss/${html}`, html);
    await keyShows(page, 'xss/value', JSON.stringify(html));
    await keyShows(page, `xss/${html}`, JSON.stringify({ [html]: html }));
    await page.waitForFunction((name) => [...document.querySelectorAll('#event-rows tr')].some((row) => row.children[1].textContent === name), { timeout: SHOWS_MS }, `xss/${html}`);
    // A manager's report names, stats and workers come from whoever writes to the store too.
    await new SharedEventEmitter(store.url).emit('_scale/managers', { name: html, kind: html, host: html, pid: 1, time_ms: Date.now(), seq: 2, stats: { [html]: html }, workers: [{ id: html, host: html, site: html, pid: 2, concurrency: 1, heartbeat_age_ms: 5, draining: false }], calls: [], orders: true });
    await page.waitForFunction((name) => document.querySelector('.manager h3')?.textContent === name, { timeout: SHOWS_MS }, html);
    assert.equal(await page.$$eval('img', (nodes) => nodes.length), 0);
    assert.equal(await page.$$eval('main *', (nodes) => nodes.filter((node) => node.hasAttribute('onerror')).length), 0);
    await new Promise((resolve) => setTimeout(resolve, 300)); // a failed image load would fire by now
    assert.deepEqual(page.dialogs, []);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.close();
    await store.stop();
  }
});

test('a Drain button writes the drain order a reporting cluster manager obeys, and shows its result', async () => {
  const store = await startStore();
  const page = await openDashboard(store.url);
  try {
    await dashboardReady(page);
    const memory = new SharedMemory(store.url);
    const events = new SharedEventEmitter(store.url);
    // The report of a cluster manager, as report_to writes it (the contract in docs/dashboard.md).
    const report = (seq, draining) => ({
      name: 'cluster-a',
      kind: 'cluster',
      host: 'h',
      pid: 10,
      time_ms: Date.now(),
      seq,
      stats: { workers_alive: 2 },
      workers: ['w1', 'w2'].map((id) => ({ id, host: 'h', site: 's1', pid: 20, concurrency: 2, heartbeat_age_ms: 120, draining: id === 'w2' && draining })),
      calls: [],
      orders: true,
    });
    await events.emit('_scale/managers', report(1, false));
    await page.waitForSelector('.manager tr[data-worker="w2"] button.drain:not([disabled])', { timeout: SHOWS_MS });
    await page.click('.manager tr[data-worker="w2"] button.drain');
    let orders = [];
    const deadline = Date.now() + SHOWS_MS;
    while (orders.length === 0 && Date.now() < deadline) {
      orders = await memory.list('_scale/orders/cluster-a/');
      if (orders.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(orders.length, 1);
    assert.deepEqual(orders[0].value, { drain: 'w2' });
    const id = orders[0].key.slice('_scale/orders/cluster-a/'.length);
    assert.match(id, /^[A-Za-z0-9_-]{1,64}$/);
    assert.equal(await page.$eval('.manager tr[data-worker="w2"] button.drain', (button) => button.disabled), true);
    // What the manager does: erase the order, emit its result, report the worker draining.
    await memory.erase(orders[0].key);
    await events.emit('_scale/managers', { name: 'cluster-a', order: id, drain: 'w2', done: true });
    await events.emit('_scale/managers', report(2, true));
    await page.waitForFunction(() => [...document.querySelectorAll('.manager .orders li.done')].some((item) => item.textContent === 'drain of w2: done'), {
      timeout: SHOWS_MS,
    });
    await page.waitForFunction(() => document.querySelector('.manager tr[data-worker="w2"]').children[6].textContent === 'draining', { timeout: SHOWS_MS });
    // A failed order says what the manager said.
    await page.click('.manager tr[data-worker="w1"] button.drain');
    await page.waitForFunction(() => document.querySelector('.manager .orders li.sent'), { timeout: SHOWS_MS });
    const [second] = await memory.list('_scale/orders/cluster-a/');
    const secondId = second.key.slice('_scale/orders/cluster-a/'.length);
    await events.emit('_scale/managers', { name: 'cluster-a', order: secondId, error: 'no worker w1 is known: drain a worker the dashboard lists', type: 'Error' });
    await page.waitForFunction(
      () => [...document.querySelectorAll('.manager .orders li.failed')].some((item) => item.textContent.startsWith('drain of w1: no worker w1 is known')),
      { timeout: SHOWS_MS },
    );
    assert.equal(await page.$eval('.manager tr[data-worker="w1"] button.drain', (button) => button.disabled), false);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.close();
    await store.stop();
  }
});

test('a manager\'s snapshot is shown when the page opens, and marked stale after 6 s without an event', async () => {
  const store = await startStore();
  try {
    // A manager whose process was killed: its snapshot stays, no event follows.
    const time = Date.now();
    await new SharedMemory(store.url).set('_scale/managers/gone', {
      name: 'gone', kind: 'thread_pool', host: 'h', pid: 5, time_ms: time, seq: 9,
      stats: { tasks_done: 3 }, workers: [], orders: false,
      calls: [{ id: 4, started_ms: time - 1000, state: 'running', progress: { items_done: 1, items_total: 4, fraction: 0.25, elapsed_ms: 1000, eta_ms: 3000, workers: 2 } }],
    });
    const page = await openDashboard(store.url);
    try {
      await page.waitForSelector('#managers[data-ready="true"]', { timeout: SHOWS_MS });
      const shown = await page.$eval('.manager', (node) => ({
        name: node.querySelector('h3').textContent,
        badge: node.querySelector('.badge').textContent,
        bar: node.querySelector('.call progress').value,
        detail: node.querySelector('.call .detail').textContent,
      }));
      assert.deepEqual([shown.name, shown.badge, shown.bar], ['gone', 'live', 0.25]);
      assert.ok(shown.detail.startsWith('1 / 4 items · 25% · ETA 3.0 s'), shown.detail);
      const opened = Date.now();
      await page.waitForFunction(() => document.querySelector('.manager.stale .badge')?.textContent.startsWith('stale: no report for'), { timeout: SHOWS_MS });
      assert.ok(Date.now() - opened >= 4000, 'marked stale before 6 s had passed');
    } finally {
      await page.close();
    }
  } finally {
    await store.stop();
  }
});

test('a store killed, unreachable for over 10 s, and restarted with --data-dir is reconnected to; the page says each and misses no change', async () => {
  const data = dataDir();
  const store = await startStore({ args: ['--data-dir', data.dir, '--fsync', 'no'] });
  const page = await openDashboard(store.url);
  try {
    await dashboardReady(page);
    const writer = new SharedMemory(store.url);
    await writer.set('r/1', 1);
    await writer.set({ 'r/2': 2, 'r/3': 3 });
    await keyShows(page, 'r/3', '3');

    await store.kill(); // SIGKILL by pid: no goodbye
    await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'reconnecting', { timeout: SHOWS_MS, polling: 'mutation' });
    await writer.set('r/4', 4).then(
      () => assert.fail('a write to a killed store succeeded'),
      () => {},
    );
    // Away for longer than 10 s, "reconnecting" becomes the message that the store is unreachable.
    await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'unreachable', { timeout: 25_000, polling: 'mutation' });
    assert.match((await statusOf(page)).text, new RegExp(`the store at ${store.url.replace(/[.]/g, '[.]')} is unreachable`));
    await store.start(); // same port, same data directory
    await writer.set('r/5', 5); // most likely before the page's stream is back: its resume brings it
    await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'reconnected', { timeout: SHOWS_MS, polling: 'mutation' });
    assert.match((await statusOf(page)).text, /reconnected/);
    await writer.set({ 'r/6': 6, 'r/7': 7 });
    await keyShows(page, 'r/7', '7');
    const rows = await keyRows(page);
    assert.deepEqual(
      rows.map((row) => row.key),
      ['r/1', 'r/2', 'r/3', 'r/5', 'r/6', 'r/7'],
    );
    assert.equal(rows.find((row) => row.key === 'r/6').revision, rows.find((row) => row.key === 'r/7').revision);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.close();
    await store.stop();
    data.remove();
  }
});
