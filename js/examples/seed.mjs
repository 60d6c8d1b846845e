// The canonical program as the seed sketched it, in JavaScript, against a scale-store. A script
// cannot take chunks (it opens no port), so the map is done by a C++ program that watches the
// store, examples/08-js-facilitated.cpp: `numbers.map()` writes the numbers as a job under
// jobs/<id> and resolves with the values the C++ side writes under results/<id>, read through a
// watch. The program runs twice, in the sketch's two forms: `await`, then a `.then` chain.
// It prints each result and exits 0 only when both are [10, 20, 30, 40, 50].
// Run: scale-store --port 12345 & build/examples/08-js-facilitated & node js/examples/seed.mjs [URL]
// (URL: else $SCALE_STORE_URL, else http://localhost:12345; $SCALE_SEED_TIMEOUT_MS bounds the
// wait for each result, 10 s by default)
import { SharedMemory, SharedEventEmitter, ScaleError } from '../scale.js';

const url = process.argv[2] ?? process.env.SCALE_STORE_URL ?? 'http://localhost:12345';
const timeoutMs = Number(process.env.SCALE_SEED_TIMEOUT_MS ?? 10_000);

/** What a job's answer carries when the C++ side could not map it: `{"error", "type"}`. */
class JobFailed extends ScaleError {}

let jobs = 0;

/**
 * The seed's `new Iterator(numbers, manager)`, where the manager is a C++ program reached through
 * the store: `map()` resolves with the mapped values, or rejects with the answer's error.
 */
class Numbers {
  constructor(values, memory) {
    this.values = values;
    this.memory = memory;
  }

  async map() {
    const id = `seed-${process.pid}-${++jobs}`;
    const resultKey = `results/${id}`;
    let settle;
    const answered = new Promise((resolve, reject) => (settle = { resolve, reject }));
    const watch = this.memory.watch(
      resultKey,
      (change) => {
        if (change.key !== resultKey || change.erased) return; // results/<id>0 shares the prefix
        watch.cancel();
        const value = change.value;
        if (value !== null && typeof value === 'object' && !Array.isArray(value) && 'error' in value)
          settle.reject(new JobFailed(value.error, { type: value.type }));
        else settle.resolve(value);
      },
      { onError: (error) => settle.reject(error) },
    );
    await watch.ready; // in place before the job exists, so its answer cannot be missed
    await this.memory.set(`jobs/${id}`, this.values);
    const timer = setTimeout(() => {
      watch.cancel();
      settle.reject(
        new ScaleError(
          `no answer under ${resultKey} within ${timeoutMs} ms: is examples/08-js-facilitated running against ${url}?`,
        ),
      );
    }, timeoutMs);
    try {
      return await answered;
    } finally {
      clearTimeout(timer);
    }
  }
}

const expected = [10, 20, 30, 40, 50];
function check(form, result) {
  console.log(`${form}: ${JSON.stringify(result)}`);
  if (JSON.stringify(result) !== JSON.stringify(expected))
    throw new ScaleError(`${form}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(result)}`);
  return result;
}

const memory = new SharedMemory(url);
const events = new SharedEventEmitter(url);
const numbers = new Numbers([1, 2, 3, 4, 5], memory);

try {
  // The `await` form.
  await memory.set({ multiplier: 10 });
  const result = await numbers.map();
  check('await', result);
  await events.emit('success!', { form: 'await', result });

  // The `.then` chain form, the sketch's object form of `set` first.
  await memory
    .set({ multiplier: 10 })
    .then(() => numbers.map())
    .then((result) => check('then', result))
    .then((result) => events.emit('success!', { form: 'then', result }));
  console.log('success!');
} catch (error) {
  console.error(`seed.mjs: ${error.message}`);
  process.exitCode = 1;
}
