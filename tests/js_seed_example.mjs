// js_seed_example_test: the seed's sketch in Node (js/examples/seed.mjs) against a real
// scale-store, its map done by the C++ program examples/08-js-facilitated. This script starts
// the store ($SCALE_STORE_BIN, free loopback port, js/support/store.mjs) and the C++ program
// ($SCALE_SEED_WORKER_BIN), waits for the program's ready line, and checks:
// - a job written before the program started is served from its listing;
// - seed.mjs prints [10,20,30,40,50] for both of its forms, emits success! twice, exits 0;
// - bad jobs (a string, an array holding a string, a fraction) get {"error", "type": "TypeMismatch"}
//   and the program goes on serving;
// - SIGTERM ends it with status 0 well within the bound, its presence key erased;
// - a restart serves the job written while it was down and none already answered;
// - SIGINT (Ctrl-C) ends it the same way;
// - seed.mjs exits 1 when the answers are wrong (this script answers its jobs wrongly).
// Every process is stopped by its pid; waits are on output and watches, bounded generously.
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { SharedMemory, SharedEventEmitter } from '../js/scale.js';
import { startStore, eventually } from '../js/support/store.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const seedScript = join(here, '..', 'js', 'examples', 'seed.mjs');
const workerBinary = process.env.SCALE_SEED_WORKER_BIN;
if (!workerBinary) throw new Error('set SCALE_SEED_WORKER_BIN to the built examples/08-js-facilitated');

const STARTUP_MS = 30_000; // the program and its first worker process, under ASan on a busy machine
const ANSWER_MS = 20_000;
const EXIT_MS = 5_000; // five times the one second the program promises

const ended = (child) =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });

/** The C++ program against `url`, resolved once it prints its ready line (which it returns). */
async function startWorker(url) {
  const child = spawn(workerBinary, [url], { stdio: ['ignore', 'pipe', 'pipe'] });
  const worker = { child, stdout: '', stderr: '' };
  child.stdout.on('data', (chunk) => (worker.stdout += chunk));
  child.stderr.on('data', (chunk) => {
    worker.stderr += chunk;
    process.stderr.write(chunk); // where ctest sees it (a sanitizer's report fails the test)
  });
  worker.ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within ${STARTUP_MS} ms: ${worker.stderr}`)), STARTUP_MS);
    child.on('error', (error) => reject(new Error(`cannot run ${workerBinary}: ${error.message}`)));
    child.on('exit', (code) => reject(new Error(`08-js-facilitated exited ${code} at start: ${worker.stderr}`)));
    child.stdout.on('data', () => {
      const line = /^08-js-facilitated: serving .*$/m.exec(worker.stdout);
      if (line) {
        clearTimeout(timer);
        resolve(line[0]);
      }
    });
  });
  return worker;
}

/** Sends `signal` to the worker by its pid; resolves with how it ended and how long it took. */
async function stopWorker(worker, signal) {
  const sent = Date.now();
  process.kill(worker.child.pid, signal);
  const timer = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`08-js-facilitated still running ${EXIT_MS} ms after ${signal}`)), EXIT_MS),
  );
  const how = await Promise.race([ended(worker.child), timer]);
  return { ...how, ms: Date.now() - sent };
}

/** A watch on `key`, in place when this resolves; `value()` waits (bounded) for what is written there. */
async function awaitKey(memory, key) {
  let settle;
  const written = new Promise((resolve, reject) => (settle = { resolve, reject }));
  written.catch(() => {}); // rejected only through value(), which rethrows it
  const watch = memory.watch(
    key,
    (change) => {
      if (change.key === key && !change.erased) {
        watch.cancel();
        settle.resolve(change.value);
      }
    },
    { onError: (error) => settle.reject(error) },
  );
  await watch.ready;
  return {
    async value() {
      const timer = setTimeout(() => {
        watch.cancel();
        settle.reject(new Error(`nothing written under ${key} within ${ANSWER_MS} ms`));
      }, ANSWER_MS);
      try {
        return await written;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** Runs seed.mjs against `url`; resolves with its exit status and output. */
function runSeed(url) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [seedScript, url], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SCALE_SEED_TIMEOUT_MS: String(ANSWER_MS) },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const store = await startStore();
const memory = new SharedMemory(store.url);
const events = new SharedEventEmitter(store.url);
let worker = null;
try {
  // A job already waiting when the program starts, with a multiplier of its own.
  await memory.set({ multiplier: 3 });
  const early = await awaitKey(memory, 'results/before-start');
  await memory.set('jobs/before-start', [1, 2, 3]);
  worker = await startWorker(store.url);
  assert.match(worker.ready, /\(1 waiting from before this start\)/);
  assert.deepEqual(await early.value(), [3, 6, 9]);
  console.log('ok: a job written before the start is served from the listing');

  // The seed's program, both forms.
  const successes = [];
  const success = events.on('success!', (payload) => successes.push(payload));
  await success.ready;
  const seed = await runSeed(store.url);
  assert.equal(seed.code, 0, `seed.mjs exited ${seed.code}: ${seed.stdout}${seed.stderr}`);
  assert.match(seed.stdout, /^await: \[10,20,30,40,50\]$/m);
  assert.match(seed.stdout, /^then: \[10,20,30,40,50\]$/m);
  await eventually(() => successes.length === 2, ANSWER_MS, 'two success! events');
  assert.deepEqual(
    successes.map((p) => p.form),
    ['await', 'then'],
  );
  for (const payload of successes) assert.deepEqual(payload.result, [10, 20, 30, 40, 50]);
  success.cancel();
  console.log(`ok: seed.mjs\n${seed.stdout.trimEnd()}`);

  // Bad jobs: an error answer each, and the program still serves the next job.
  const bad = { 'bad-string': 'one two three', 'bad-mixed': [1, 'two', 3], 'bad-fraction': [1.5], 'bad-object': { n: 1 } };
  const badAnswers = {};
  for (const id of Object.keys(bad)) badAnswers[id] = await awaitKey(memory, `results/${id}`);
  const after = await awaitKey(memory, 'results/after-bad');
  const jobs = {};
  for (const [id, job] of Object.entries(bad)) jobs[`jobs/${id}`] = job;
  await memory.set(jobs);
  await memory.set('jobs/after-bad', [7]);
  for (const [id, pending] of Object.entries(badAnswers)) {
    const answer = await pending.value();
    assert.equal(answer.type, 'TypeMismatch', `${id}: ${JSON.stringify(answer)}`);
    assert.match(answer.error, new RegExp(`jobs/${id}.*an array of integers`));
  }
  assert.deepEqual(await after.value(), [70]);
  assert.equal(worker.child.exitCode, null, 'the program is still running after the bad jobs');
  console.log('ok: bad jobs are answered {"error", "type": "TypeMismatch"} and the program goes on');

  // SIGTERM: status 0, quickly, presence key erased.
  const presence = `workers/08-js-facilitated/${worker.child.pid}`;
  assert.notEqual(await memory.entry(presence), null);
  let stopped = await stopWorker(worker, 'SIGTERM');
  assert.deepEqual([stopped.code, stopped.signal], [0, null], worker.stderr);
  assert.match(worker.stdout, /08-js-facilitated: stopped/);
  assert.equal(await memory.entry(presence), null);
  console.log(`ok: SIGTERM ends it with status 0 in ${stopped.ms} ms`);
  worker = null;

  // A restart serves the job written while it was down, and only that one.
  await memory.set({ multiplier: 10 });
  const whileDown = await awaitKey(memory, 'results/while-down');
  await memory.set('jobs/while-down', [4]);
  worker = await startWorker(store.url);
  assert.match(worker.ready, /\(1 waiting from before this start\)/);
  assert.deepEqual(await whileDown.value(), [40]);
  stopped = await stopWorker(worker, 'SIGINT');
  assert.deepEqual([stopped.code, stopped.signal], [0, null], worker.stderr);
  console.log(`ok: a restart serves only the job it missed; SIGINT ends it with status 0 in ${stopped.ms} ms`);
  worker = null;

  // seed.mjs checks its values: answered wrongly (doubled, not multiplied by 10), it exits 1.
  const wrong = memory.watch('jobs/seed-', (change) => {
    if (change.erased) return;
    const id = change.key.slice('jobs/'.length);
    memory.set(`results/${id}`, change.value.map((n) => n * 2)).catch((error) => console.error(`answering ${id}: ${error.message}`));
  });
  await wrong.ready;
  const refused = await runSeed(store.url);
  wrong.cancel();
  assert.equal(refused.code, 1, `seed.mjs exited ${refused.code} on wrong answers: ${refused.stdout}${refused.stderr}`);
  assert.match(refused.stderr, /expected \[10,20,30,40,50\], got \[2,4,6,8,10\]/);
  console.log('ok: seed.mjs exits 1 when the answers are wrong');
} finally {
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
    worker.child.kill('SIGKILL');
    await ended(worker.child);
  }
  await store.stop();
}
