// SharedEventEmitter.onPrefix against a real scale-store: every event whose name starts with a
// prefix ('' for all), delivered with its name, as a part of the client's one stream
// (GET /v1/stream?event_prefix=).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { SharedEventEmitter } from '../scale.js';
import { startStore, eventually, unique } from '../support/store.mjs';

let store;
let events;
before(async () => {
  store = await startStore({ token: 'prefix-token' });
  events = new SharedEventEmitter(store.url, { token: store.token });
});
after(async () => store.stop());

async function subscribers() {
  const response = await fetch(`${store.url}/metrics`, { headers: { authorization: `Bearer ${store.token}` } });
  return Number(/\nscale_store_subscribers (\d+)\n/.exec(await response.text())[1]);
}

test('onPrefix calls its handler with the payload and the name of every event under the prefix', async () => {
  const base = unique('jobs');
  const under = [];
  const every = [];
  const exact = [];
  const subs = [
    events.onPrefix(base, (payload, name) => under.push([name, payload])),
    events.onPrefix('', (payload, name) => every.push([name, payload])),
    events.on(`${base}a`, (payload, name) => exact.push([payload, name])),
  ];
  await Promise.all(subs.map((s) => s.ready));
  assert.equal(await subscribers(), 1); // one stream for the three parts
  await events.emit(`${base}a`, { n: 1 });
  await events.emit(`other-${base}`, [2]);
  await events.emit(base.slice(0, -1), 3); // the prefix without its last character
  await events.emit(`${base}b/c`);
  const fence = `${base}fence`;
  await events.emit(fence, 'end');
  await eventually(() => every.some(([name]) => name === fence), 10_000, 'the fence event');
  await eventually(() => under.some(([name]) => name === fence), 10_000, 'the fence under the prefix');
  for (const s of subs) s.cancel();
  const mine = every.filter(([name]) => name.includes(base.slice(0, -1)));
  assert.deepEqual(under, [[`${base}a`, { n: 1 }], [`${base}b/c`, null], [fence, 'end']]);
  assert.deepEqual(mine, [
    [`${base}a`, { n: 1 }],
    [`other-${base}`, [2]],
    [base.slice(0, -1), 3],
    [`${base}b/c`, null],
    [fence, 'end'],
  ]);
  assert.deepEqual(exact, [[{ n: 1 }, undefined]]); // on's handler gets the payload alone
});

test('an onPrefix subscription follows on: cancel stops it, a throwing handler goes to onError, bad arguments throw', async () => {
  const base = unique('cancel');
  const seen = [];
  const errors = [];
  const sub = events.onPrefix(base, (payload) => {
    seen.push(payload);
    if (payload === 'throw') throw new Error('handler failed');
  }, { onError: (error) => errors.push(error.message) });
  await sub.ready;
  assert.equal(sub.active, true);
  await events.emit(`${base}x`, 'throw');
  await events.emit(`${base}y`, 'after');
  await eventually(() => seen.length >= 2, 10_000, 'both payloads');
  assert.deepEqual(errors, ['handler failed']); // and delivery went on
  sub.cancel();
  assert.equal(sub.active, false);
  sub.cancel(); // twice is harmless
  // A fence on another subscription of the same stream: once it arrives, a late delivery would have too.
  const fence = events.once(`${base}fence`);
  await events.emit(`${base}z`, 'late');
  await events.emit(`${base}fence`, 0);
  await fence;
  assert.deepEqual(seen, ['throw', 'after']);
  assert.throws(() => events.onPrefix(7, () => {}), TypeError);
  assert.throws(() => events.onPrefix('p', 'not a function'), TypeError);
});
