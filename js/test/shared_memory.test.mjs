// The SharedMemory behaviour suite (tests/shared_memory_suite.hpp), written for scale.js, against
// a real scale-store.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { SharedMemory, KeyNotFound, TypeMismatch, Compacted, Subscription } from '../scale.js';
import { suiteStore, startStore, eventually, unique } from '../support/store.mjs';

let store;
let memory;
before(async () => {
  store = await suiteStore();
  memory = new SharedMemory(store.url, { token: store.token });
});
after(async () => store.stop());

/** A handler that records what it is called with. */
function recorder() {
  const items = [];
  const record = (item) => items.push(item);
  record.items = items;
  return record;
}

test('a value set under a key reads back with revision and timestamp', async () => {
  const p = unique('read');
  const before = Date.now();
  const revision = await memory.set(`${p}answer`, 42);
  assert.ok(Number.isInteger(revision) && revision > 0);
  assert.equal(await memory.get(`${p}answer`), 42);
  const entry = await memory.entry(`${p}answer`);
  assert.equal(entry.key, `${p}answer`);
  assert.equal(entry.value, 42);
  assert.equal(entry.revision, revision);
  assert.ok(entry.timestampMs >= before - 1000);
  assert.equal(await memory.entry(`${p}absent`), null);

  await memory.set(`${p}name`, 'scale');
  await memory.set(`${p}list`, [1, 2, 3]);
  await memory.set(`${p}point`, { x: 3, y: 4 });
  await memory.set(`${p}flag`, true);
  await memory.set(`${p}nothing`, null);
  assert.equal(await memory.get(`${p}name`), 'scale');
  assert.deepEqual(await memory.get(`${p}list`), [1, 2, 3]);
  assert.deepEqual(await memory.get(`${p}point`), { x: 3, y: 4 });
  assert.equal(await memory.get(`${p}flag`), true);
  assert.equal(await memory.get(`${p}nothing`), null);
  await assert.rejects(memory.set(`${p}undefined`, undefined), TypeError);
});

test('set with an object writes every key in one step with one revision', async () => {
  const p = unique('object');
  const first = await memory.set(`${p}before`, 0);
  const revision = await memory.set({ [`${p}a`]: 1, [`${p}b`]: 'two', [`${p}c`]: [1, 2] });
  assert.equal(revision, first + 1);
  for (const key of ['a', 'b', 'c']) assert.equal((await memory.entry(`${p}${key}`)).revision, revision);
  assert.equal(await memory.get(`${p}b`), 'two');
  // The chaining form, as the seed's sketch writes it.
  const chained = await memory.set({ [`${p}multiplier`]: 10 }).then((r) => r);
  assert.equal(chained, revision + 1);
  await assert.rejects(memory.set([1, 2]), TypeError);
  await assert.rejects(memory.set(5), TypeError);
});

test('revisions are store-wide and strictly increasing across every kind of write', async () => {
  const p = unique('revisions');
  const revisions = [];
  revisions.push(await memory.set(`${p}x`, 1));
  revisions.push(await memory.set(`${p}y`, 1));
  await memory.increment(`${p}n`);
  revisions.push((await memory.entry(`${p}n`)).revision);
  assert.equal(await memory.compareAndSet(`${p}x`, revisions[0], 2), true);
  revisions.push((await memory.entry(`${p}x`)).revision);
  assert.equal(await memory.erase(`${p}y`), true);
  revisions.push((await memory.set(`${p}z`, 1)) - 1);
  revisions.push((await memory.entry(`${p}z`)).revision);
  for (let i = 1; i < revisions.length; ++i) assert.equal(revisions[i], revisions[i - 1] + 1);
});

test('get of a missing key fails with KeyNotFound naming the key', async () => {
  const p = unique('missing');
  await assert.rejects(memory.get(`${p}nowhere`), (error) => {
    assert.ok(error instanceof KeyNotFound);
    assert.equal(error.key, `${p}nowhere`);
    assert.match(error.message, /is not set/);
    assert.ok(error.message.includes(`'${p}nowhere'`));
    return true;
  });
});

test('erase removes a key and reports whether it was there', async () => {
  const p = unique('erase');
  const revision = await memory.set(`${p}k`, 1);
  assert.equal(await memory.erase(`${p}k`), true);
  assert.equal(await memory.entry(`${p}k`), null);
  assert.equal(await memory.erase(`${p}k`), false);
  assert.equal(await memory.set(`${p}other`, 1), revision + 2);
});

test('compareAndSet writes only when the revision matches, 0 meaning absent', async () => {
  const p = unique('cas');
  assert.equal(await memory.compareAndSet(`${p}lock`, 0, 'me'), true);
  const created = (await memory.entry(`${p}lock`)).revision;
  assert.equal(await memory.compareAndSet(`${p}lock`, 0, 'you'), false);
  assert.equal(await memory.compareAndSet(`${p}lock`, created + 5, 'you'), false);
  assert.equal(await memory.compareAndSet(`${p}missing`, 7, 1), false);
  assert.equal(await memory.get(`${p}lock`), 'me');
  assert.equal(await memory.compareAndSet(`${p}lock`, created, 'you'), true);
  const entry = await memory.entry(`${p}lock`);
  assert.equal(entry.value, 'you');
  assert.equal(entry.revision, created + 1);
});

test('increment counts from 0 for a missing key, resolves to a Number and refuses a non-integer', async () => {
  const p = unique('increment');
  assert.equal(await memory.increment(`${p}count`), 1);
  assert.equal(await memory.increment(`${p}count`, 41), 42);
  const value = await memory.increment(`${p}count`, -50);
  assert.equal(typeof value, 'number');
  assert.equal(value, -8);
  assert.equal(await memory.get(`${p}count`), -8);
  await memory.set(`${p}text`, 'x');
  await memory.set(`${p}real`, 1.5);
  const revision = (await memory.entry(`${p}real`)).revision;
  await assert.rejects(memory.increment(`${p}text`), TypeMismatch);
  await assert.rejects(memory.increment(`${p}real`), (error) => {
    assert.ok(error instanceof TypeMismatch);
    assert.equal(error.key, `${p}real`);
    return true;
  });
  assert.equal(await memory.get(`${p}real`), 1.5);
  assert.equal(await memory.set(`${p}after`, 1), revision + 1);
});

test('list returns the entries under a prefix sorted by key', async () => {
  const p = unique('list');
  await memory.set({ [`${p}user/c`]: 3, [`${p}user/a`]: 1, [`${p}users`]: 9, [`${p}other/x`]: 0, [`${p}user/b`]: 2 });
  const users = await memory.list(`${p}user/`);
  assert.deepEqual(
    users.map((e) => e.key),
    [`${p}user/a`, `${p}user/b`, `${p}user/c`],
  );
  assert.equal(users[2].value, 3);
  assert.equal((await memory.list(p)).length, 5);
  assert.deepEqual(await memory.list(`${p}nothing/`), []);
});

test('two clients of one store share it', async () => {
  const p = unique('copies');
  const other = new SharedMemory(store.url, { token: store.token });
  await other.set(`${p}shared`, 5);
  assert.equal(await memory.get(`${p}shared`), 5);
});

test('a watch from now sees only later changes, in order', async () => {
  const p = unique('watch');
  await memory.set(`${p}old`, 1);
  const seen = recorder();
  const sub = memory.watch(p, seen);
  assert.ok(sub instanceof Subscription);
  await sub.ready;
  const first = await memory.set(`${p}a`, 1);
  await memory.set(`${p.slice(0, -1)}-elsewhere`, 1);
  await memory.set(`${p}b`, 'two');
  await memory.erase(`${p}a`);
  await eventually(() => seen.items.length >= 3, 5000, 'three changes');
  sub.cancel();
  const changes = seen.items;
  assert.equal(changes.length, 3);
  assert.deepEqual(
    changes.map((c) => [c.key, c.revision, c.erased]),
    [
      [`${p}a`, first, false],
      [`${p}b`, first + 2, false],
      [`${p}a`, first + 3, true],
    ],
  );
  assert.equal(changes[0].value, 1);
  assert.equal(changes[1].value, 'two');
  assert.equal(changes[2].value, null);
  assert.ok(changes[2].timestampMs >= changes[0].timestampMs);
});

test('a watch from a past revision replays history first and never calls inside watch', async () => {
  const p = unique('replay');
  const first = await memory.set(`${p}1`, 1);
  await memory.set(`${p}2`, 2);
  await memory.set(`x${p}3`, 3);
  const pair = await memory.set({ [`${p}4`]: 4, [`${p}5`]: 5 });
  const seen = recorder();
  let inside = true;
  const sub = memory.watch(p, seen, { from: first + 1 });
  inside = false;
  assert.equal(seen.items.length, 0, `called inside watch: ${inside}`);
  await sub.ready;
  await memory.set(`${p}6`, 6);
  await eventually(() => seen.items.length >= 4, 5000, 'four changes');
  sub.cancel();
  assert.deepEqual(
    seen.items.map((c) => [c.key, c.revision]),
    [
      [`${p}2`, first + 1],
      [`${p}4`, pair],
      [`${p}5`, pair],
      [`${p}6`, pair + 1],
    ],
  );
});

test('a watch from a revision not yet written delivers exactly the revisions from it on', async () => {
  const p = unique('future');
  const now = await memory.set(`${p}0`, 0);
  const seen = recorder();
  const sub = memory.watch(p, seen, { from: now + 3 });
  await sub.ready;
  for (let i = 1; i <= 4; ++i) await memory.set(`${p}${i}`, i);
  await eventually(() => seen.items.length >= 2, 5000, 'two changes');
  await memory.set(`${p}fence`, 0);
  await eventually(() => seen.items.length >= 3, 5000, 'the fence');
  sub.cancel();
  assert.deepEqual(
    seen.items.slice(0, 2).map((c) => [c.key, c.revision]),
    [
      [`${p}3`, now + 3],
      [`${p}4`, now + 4],
    ],
  );
});

test('a watch from the past sees every revision once, in order, while clients write', async () => {
  const p = unique('concurrent');
  for (let i = 0; i < 100; ++i) await memory.set(`${p}warmup`, i);
  const from = (await memory.entry(`${p}warmup`)).revision - 49;
  const writers = [];
  for (let t = 0; t < 4; ++t)
    writers.push(
      (async () => {
        const client = new SharedMemory(store.url, { token: store.token });
        for (let i = 0; i < 250; ++i) await client.set(`${p}${t}/${i % 10}`, i);
      })(),
    );
  const seen = recorder();
  const sub = memory.watch(p, seen, { from });
  await sub.ready;
  await Promise.all(writers);
  const last = await memory.set(`${p}last`, 0);
  const expected = last - from + 1;
  await eventually(() => seen.items.length >= expected, 10_000, `${expected} changes`);
  sub.cancel();
  assert.equal(seen.items.length, expected);
  seen.items.forEach((change, i) => assert.equal(change.revision, from + i));
});

test('a watch from before the kept history fails ready and onError with Compacted and never calls', async () => {
  const small = await startStore({ args: ['--history', '100'] });
  try {
    const client = new SharedMemory(small.url);
    const first = await client.set('k', 0);
    for (let i = 1; i < 300; ++i) await client.set('k', i);
    let calls = 0;
    const errors = [];
    const sub = client.watch('', () => ++calls, { from: first, onError: (error) => errors.push(error) });
    await assert.rejects(sub.ready, (error) => {
      assert.ok(error instanceof Compacted);
      assert.equal(error.requested, first);
      assert.ok(error.oldestKept > first);
      assert.match(error.message, /list\(\)/);
      return true;
    });
    await eventually(() => errors.length === 1, 5000, 'onError');
    assert.ok(errors[0] instanceof Compacted);
    assert.equal(sub.active, false);
    await client.set('k', -1);
    // A revision still in the history works, on the same client.
    const seen = recorder();
    const recent = client.watch('', seen, { from: first + 250 });
    await recent.ready;
    await eventually(() => seen.items.length >= 51, 5000, '51 changes');
    recent.cancel();
    assert.equal(calls, 0);
  } finally {
    await small.stop();
  }
});

test('cancel from inside the handler stops later calls', async () => {
  const p = unique('cancel-inside');
  let calls = 0;
  const sub = memory.watch(p, () => {
    ++calls;
    sub.cancel();
  });
  await sub.ready;
  const witness = recorder();
  const w = memory.watch(p, witness);
  await w.ready;
  await memory.set({ [`${p}a`]: 1, [`${p}b`]: 2, [`${p}c`]: 3 });
  await memory.set(`${p}d`, 4);
  await eventually(() => witness.items.length >= 4, 5000, 'four changes');
  w.cancel();
  assert.equal(calls, 1);
});

test('a cancelled subscription stops delivery while the others go on', async () => {
  const p = unique('cancel');
  const kept = recorder();
  const dropped = recorder();
  const witness = memory.watch(p, kept);
  await witness.ready;
  const sub = memory.watch(p, dropped);
  await sub.ready;
  await memory.set(`${p}a`, 1);
  await eventually(() => dropped.items.length >= 1, 5000, 'the first change');
  sub.cancel();
  sub.cancel(); // twice is fine
  assert.equal(sub.active, false);
  await memory.set(`${p}b`, 2);
  await eventually(() => kept.items.length >= 2, 5000, 'two changes');
  witness.cancel();
  assert.equal(dropped.items.length, 1);
});

test('many clients write and read one store at once', async () => {
  const p = unique('many');
  const clients = 8;
  const rounds = 50;
  let failures = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, t) => {
      const client = new SharedMemory(store.url, { token: store.token });
      for (let i = 0; i < rounds; ++i) {
        await client.increment(`${p}counter`);
        await client.set(`${p}own/${t}`, i);
        if ((await client.get(`${p}own/${t}`)) !== i) ++failures;
        for (;;) {
          const entry = await client.entry(`${p}cas`);
          if (await client.compareAndSet(`${p}cas`, entry ? entry.revision : 0, (entry ? entry.value : 0) + 1)) break;
        }
      }
    }),
  );
  assert.equal(failures, 0);
  assert.equal(await memory.get(`${p}counter`), clients * rounds);
  assert.equal(await memory.get(`${p}cas`), clients * rounds);
  assert.equal((await memory.list(`${p}own/`)).length, clients);
});

test('a watch from a negative revision is refused at once', () => {
  assert.throws(() => memory.watch('', () => {}, { from: -5 }), /revision/);
});
