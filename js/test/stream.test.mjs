// scale.js against real scale-stores: the one shared stream (GET /v1/stream), reconnecting and
// resuming after a restart, and the errors (401, 413, 400, an unreachable store).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';

import {
  SharedMemory,
  SharedEventEmitter,
  ConnectionError,
  Unauthorized,
  ScaleError,
} from '../scale.js';
import { startStore, dataDir, eventually } from '../support/store.mjs';

async function metric(url, name, token = '') {
  const response = await fetch(`${url}/metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const found = new RegExp(`\\n${name} (\\d+)\\n`).exec(await response.text());
  return Number(found[1]);
}

/** A loopback port nothing listens on (bound, then closed). */
async function closedPort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('every watch and subscription of one store share one SSE stream', async () => {
  const store = await startStore();
  try {
    const memory = new SharedMemory(store.url);
    const events = new SharedEventEmitter(store.url);
    const subs = [memory.watch('a/', () => {}), memory.watch('b/', () => {}), events.on('x', () => {}), events.on('y', () => {})];
    await Promise.all(subs.map((s) => s.ready));
    assert.equal(await metric(store.url, 'scale_store_subscribers'), 1);
    for (const s of subs) s.cancel();
    await eventually(() => true);
  } finally {
    await store.stop();
  }
});

test('a watch resumes after the store restarts with --data-dir, missing no change and repeating none', async () => {
  const data = dataDir();
  const store = await startStore({ args: ['--data-dir', data.dir, '--fsync', 'no'] });
  try {
    const writer = new SharedMemory(store.url);
    const reader = new SharedMemory(store.url);
    const seen = [];
    const events = [];
    const sub = reader.watch('r/', (change) => seen.push(change));
    const quiet = reader.watch('quiet/', () => {});
    const emitter = new SharedEventEmitter(store.url);
    const on = emitter.on('ping', (payload) => events.push(payload));
    await Promise.all([sub.ready, quiet.ready, on.ready]);
    await writer.set('r/1', 1);
    await writer.set({ 'r/2': 2, 'r/3': 3 }); // one revision, two changes
    await eventually(() => seen.length >= 3, 5000, 'three changes');

    await store.kill(); // no goodbye: the stream breaks
    await store.start(); // same port, same data directory
    // Written while the reader is away or reconnecting: the resume must deliver them.
    await writer.set('r/4', 4);
    await writer.set({ 'r/5': 5, 'r/6': 6 });
    await eventually(() => seen.length >= 6, 10_000, 'the changes written across the restart');
    await emitter.emit('ping', 'after');
    await eventually(() => events.length >= 1, 10_000, 'an event after the reconnect');
    await writer.set('r/7', 7);
    await eventually(() => seen.length >= 7, 5000, 'a live change after the reconnect');
    sub.cancel();
    quiet.cancel();
    on.cancel();
    assert.deepEqual(
      seen.map((c) => c.key),
      ['r/1', 'r/2', 'r/3', 'r/4', 'r/5', 'r/6', 'r/7'],
    );
    for (let i = 1; i < seen.length; ++i) assert.ok(seen[i].revision >= seen[i - 1].revision);
  } finally {
    await store.stop();
    data.remove();
  }
});

test('a watch added later reopens the stream and the earlier watch misses nothing meanwhile', async () => {
  const store = await startStore();
  try {
    const memory = new SharedMemory(store.url);
    const first = [];
    const a = memory.watch('a/', (change) => first.push(change.key));
    await a.ready;
    const writes = (async () => {
      for (let i = 0; i < 200; ++i) await memory.set(`a/${i}`, i);
    })();
    const later = [];
    const kept = [];
    for (let i = 0; i < 5; ++i) {
      const b = memory.watch(`b${i}/`, (change) => later.push(change.key));
      await b.ready;
      await memory.set(`b${i}/k`, i);
      await eventually(() => later.length === i + 1, 5000, `the change of b${i}/`);
      if (i % 2 === 0) b.cancel();
      else kept.push(b);
    }
    await writes;
    await eventually(() => first.length >= 200, 10_000, 'every change of a/');
    a.cancel();
    for (const b of kept) b.cancel();
    assert.deepEqual(first, Array.from({ length: 200 }, (_, i) => `a/${i}`));
    assert.deepEqual(later, ['b0/k', 'b1/k', 'b2/k', 'b3/k', 'b4/k']);
  } finally {
    await store.stop();
  }
});

test('a value over the store body limit is refused with the store 413 message', async () => {
  const store = await startStore({ args: ['--max-body', '1024'] });
  try {
    const memory = new SharedMemory(store.url);
    await assert.rejects(memory.set('big', 'x'.repeat(4096)), (error) => {
      assert.ok(error instanceof ScaleError);
      assert.equal(error.status, 413);
      assert.match(error.message, /the limit is 1024 \(scale-store --max-body\)/);
      return true;
    });
    assert.equal(await memory.entry('big'), null);
  } finally {
    await store.stop();
  }
});

test('an unreachable store gives ConnectionError naming the URL, for calls and for watches', async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  const memory = new SharedMemory(url, { connectTimeoutMs: 2000 });
  const started = Date.now();
  await assert.rejects(memory.get('k'), (error) => {
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.url, url);
    assert.ok(error.message.includes(url));
    return true;
  });
  assert.ok(Date.now() - started < 2500);
  const sub = memory.watch('', () => {});
  await assert.rejects(sub.ready, ConnectionError);
  sub.cancel();
  // A store that accepts and never answers is cut off at the connect timeout.
  const accepted = [];
  const silent = createServer((socket) => accepted.push(socket));
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  try {
    const slow = new SharedMemory(`http://127.0.0.1:${silent.address().port}`, { connectTimeoutMs: 300 });
    await assert.rejects(slow.set('k', 1), (error) => error instanceof ConnectionError && /300 ms/.test(error.message));
  } finally {
    for (const socket of accepted) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
});

test('a wrong token gives Unauthorized, for calls and for watches; the right one works', async () => {
  const store = await startStore({ token: 's3cret' });
  try {
    const wrong = new SharedMemory(store.url, { token: 'guess' });
    await assert.rejects(wrong.set('k', 1), (error) => error instanceof Unauthorized && /token is wrong/.test(error.message));
    await assert.rejects(new SharedMemory(store.url).get('k'), Unauthorized);
    const errors = [];
    const sub = wrong.watch('', () => {}, { onError: (error) => errors.push(error) });
    await assert.rejects(sub.ready, Unauthorized);
    assert.ok(errors[0] instanceof Unauthorized);
    const right = new SharedMemory(store.url, { token: 's3cret' });
    const seen = [];
    const ok = right.watch('', (change) => seen.push(change));
    await ok.ready;
    await right.set('k', 1);
    await eventually(() => seen.length === 1, 5000, 'a change');
    ok.cancel();
    await assert.rejects(new SharedEventEmitter(store.url, { token: 'guess' }).emit('e'), Unauthorized);
  } finally {
    await store.stop();
  }
});

test('a stream of no parts or of 65 parts is refused with 400 and a JSON reason', async () => {
  const store = await startStore();
  try {
    for (const query of ['', Array.from({ length: 65 }, (_, i) => `watch=p${i}/`).join('&')]) {
      const response = await fetch(`${store.url}/v1/stream?${query}`);
      assert.equal(response.status, 400);
      const body = await response.json();
      assert.equal(body.type, 'Error');
      assert.match(body.error, /1 to 64 parts/);
    }
    const ok = await fetch(`${store.url}/v1/stream?${Array.from({ length: 64 }, (_, i) => `event=e${i}`).join('&')}`);
    assert.equal(ok.status, 200);
    await ok.body.cancel();
  } finally {
    await store.stop();
  }
});
