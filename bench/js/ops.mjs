// scale.js get or set ops/s against a scale-store: `concurrency` requests in flight at once
// (a closed loop: each finished request starts the next), for `seconds`, after a short warm-up.
// Two references without scale.js, to tell its cost from Node's: `fetch` (the same GET by Node's
// fetch, the answer read and parsed, which is what scale.js's get does) and `http` (the same GET
// by node:http over `concurrency` kept-alive sockets).
// Run by bench/js_client.cpp: node ops.mjs <url> get|set|fetch|http <concurrency> <seconds>
// Prints one JSON line: {"rate": ops/s, "ops": N, "seconds": S}. A wrong value read exits 1.
import http from 'node:http';
import { SharedMemory } from '../../js/scale.js';

const [url, op, concurrencyText, secondsText] = process.argv.slice(2);
const concurrency = Number(concurrencyText);
const seconds = Number(secondsText);
if (!url || !['get', 'set', 'fetch', 'http'].includes(op) || !(concurrency >= 1) || !(seconds > 0)) {
  console.error('usage: node ops.mjs <store url> get|set|fetch|http <concurrency >= 1> <seconds > 0>');
  process.exit(2);
}

const memory = new SharedMemory(url);
const key = 'bench-key';
const value = 'vvvvvvvvvvvvvv'; // 16 bytes as JSON, as bench/store_vs_redis.cpp writes
await memory.set(key, value);

const check = (read) => {
  if (read !== value) throw new Error(`get read ${JSON.stringify(read)}, not ${JSON.stringify(value)}`);
};
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const ways = {
  get: async () => check(await memory.get(key)),
  set: () => memory.set(key, value),
  fetch: async () => {
    const response = await fetch(`${url}/v1/kv/${key}`);
    check(JSON.parse(await response.text()).value);
  },
  http: () =>
    new Promise((resolve, reject) => {
      http
        .get(`${url}/v1/kv/${key}`, { agent }, (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk) => (text += chunk));
          response.on('end', () => {
            try {
              resolve(check(JSON.parse(text).value));
            } catch (error) {
              reject(error);
            }
          });
        })
        .on('error', reject);
    }),
};
const once = ways[op];

/** ops/s of `concurrency` loops for `ms`. */
async function run(ms) {
  let ops = 0;
  const start = performance.now();
  const deadline = start + ms;
  const loop = async () => {
    while (performance.now() < deadline) {
      await once();
      ++ops;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const elapsed = (performance.now() - start) / 1000;
  return { rate: ops / elapsed, ops, seconds: elapsed };
}

try {
  await run(300); // connections open, the JIT warm
  console.log(JSON.stringify(await run(seconds * 1000)));
  agent.destroy();
} catch (error) {
  console.error(`ops.mjs: ${op} failed: ${error?.message ?? error}`);
  process.exit(1);
}
