// Many concurrent SSE subscribers of one event on one scale-store, each on a stream of its own:
// the store's memory per subscriber and the delay from an emit to each subscriber's receipt.
// Run by bench/js_subscribers.cpp: node subscribers.mjs <url> <store pid> <subscribers> <rounds>
//
// Why raw HTTP (node:net, one socket each, the request written and the SSE read by hand) and not
// scale.js: scale.js puts every subscription of one store (URL and token) in one process on ONE
// shared stream, by design (docs/js.md), so 1,000 SharedEventEmitters in one Node process would be 1,000 parts of one stream, not 1,000
// subscribers of the store. Each connection here asks for what a scale.js client with one `on`
// asks for: GET /v1/stream?event=<name>, and reads its SSE as scale.js does. Bare sockets keep
// node's own cost per delivery small (no HTTP parser, no stream objects), so the delays measured
// are mostly the store's; the emit goes over node:http on one kept-alive connection, after three
// warm-up emits that are not counted.
//
// Prints one JSON line: {"rss_before", "rss_after" (bytes, VmRSS of the store), "subscribers"
// (the store's scale_store_subscribers once all are in place), "rounds": [{"p50_ms", "p99_ms",
// "max_ms", "emit_ms", "store_cpu_ms", "node_cpu_ms"}], "all": {"p50_ms", "p99_ms", "max_ms"} over
// every delivery of every round}; the CPU times (the store's threads from /proc/<pid>/task/*/
// schedstat, node's own from process.cpuUsage) say how much of a delay was work and how much
// was waiting for a core. A subscriber that misses an emit, or gets one twice, exits 1 naming it.
import http from 'node:http';
import net from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';

const [url, pidText, countText, roundsText] = process.argv.slice(2);
const count = Number(countText);
const rounds = Number(roundsText);
if (!url || !(Number(pidText) > 0) || !(count >= 1) || !(rounds >= 1)) {
  console.error('usage: node subscribers.mjs <store url> <store pid> <subscribers >= 1> <rounds >= 1>');
  process.exit(2);
}
const fail = (message) => {
  console.error(`subscribers.mjs: ${message}`);
  process.exit(1);
};
const rss = () => {
  const found = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pidText}/status`, 'utf8'));
  if (!found) fail(`no VmRSS in /proc/${pidText}/status`);
  return Number(found[1]) * 1024;
};
/** CPU time the store's threads have run, in ms (the first field of each thread's schedstat, ns). */
const storeCpuMs = () =>
  readdirSync(`/proc/${pidText}/task`).reduce((sum, task) => {
    try {
      return sum + Number(readFileSync(`/proc/${pidText}/task/${task}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
    } catch {
      return sum; // a thread that ended meanwhile
    }
  }, 0);
const EVENT = 'bench/tick';
const { hostname: host, port } = new URL(url);

/** One subscriber: its stream, and when it received each round (performance.now()). */
function subscribe(index) {
  const subscriber = { index, received: new Array(rounds).fill(null), onRound: null };
  subscriber.ready = new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    socket.setNoDelay(true);
    socket.setEncoding('latin1'); // the answers here are ASCII
    socket.on('connect', () =>
      socket.write(`GET /v1/stream?event=${encodeURIComponent(EVENT)} HTTP/1.1\r\nHost: ${host}:${port}\r\naccept: text/event-stream\r\n\r\n`),
    );
    let buffer = '';
    let head = true;
    socket.on('data', (chunk) => {
      const at = performance.now();
      buffer += chunk;
      if (head) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const status = buffer.slice(0, buffer.indexOf('\r\n'));
        if (!status.startsWith('HTTP/1.1 200')) {
          reject(new Error(`subscriber ${index}: the store answered ${status}`));
          socket.destroy();
          return;
        }
        buffer = buffer.slice(end + 4);
        head = false;
      }
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (block === ': ready') {
          resolve();
          continue;
        }
        if (!block.startsWith('event: event\n')) continue;
        const data = block.split('\n').find((line) => line.startsWith('data: '));
        const round = JSON.parse(data.slice(6)).payload.round;
        if (round < 0) continue; // a warm-up emit
        if (subscriber.received[round] !== null) fail(`subscriber ${index} got the emit of round ${round} twice`);
        subscriber.received[round] = at;
        subscriber.onRound?.(round);
      }
    });
    socket.on('end', () => fail(`subscriber ${index}: the store ended its stream`));
    socket.on('error', (error) => reject(new Error(`subscriber ${index}: ${error.message}`)));
  });
  return subscriber;
}

/** POST /v1/events/EVENT {round} on one kept-alive connection; resolves to the answer's status and body. */
const emitAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function emit(round) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ round });
    const request = http.request(
      `${url}/v1/events/${encodeURIComponent(EVENT)}`,
      { method: 'POST', agent: emitAgent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (text += chunk));
        response.on('end', () => resolve({ status: response.statusCode, text }));
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

async function storeSubscribers() {
  const text = await (await fetch(`${url}/metrics`)).text();
  const found = /^scale_store_subscribers\s+(\d+)/m.exec(text);
  return found ? Number(found[1]) : -1;
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];

const rssBefore = rss();
const subscribers = [];
for (let i = 0; i < count; ++i) subscribers.push(subscribe(i));
try {
  await Promise.all(subscribers.map((s) => s.ready));
} catch (error) {
  fail(error.message);
}
const rssAfter = rss();
const inStore = await storeSubscribers();

// Three emits nobody counts first: the emit's connection is open and node's receiving code
// compiled (with one, the first counted round still paid for node's warm-up).
for (let warm = 0; warm < 3; ++warm) {
  const answer = await emit(-1);
  if (answer.status !== 200) fail(`a warm-up emit got HTTP ${answer.status}: ${answer.text}`);
  await new Promise((resolve) => setTimeout(resolve, 100));
}

const results = [];
const everyDelay = [];
for (let round = 0; round < rounds; ++round) {
  let waiting = count;
  const all = new Promise((resolve) => {
    for (const s of subscribers)
      s.onRound = (r) => {
        if (r === round && --waiting === 0) resolve();
      };
  });
  const storeCpuBefore = storeCpuMs();
  const nodeCpuBefore = process.cpuUsage();
  const start = performance.now();
  const answer = await emit(round);
  const emitMs = performance.now() - start;
  if (answer.status !== 200) fail(`the emit of round ${round} got HTTP ${answer.status}: ${answer.text}`);
  const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 10_000));
  if ((await Promise.race([all, timeout])) === 'timeout') {
    const missed = subscribers.filter((s) => s.received[round] === null).map((s) => s.index);
    fail(`${missed.length} of ${count} subscribers did not receive the emit of round ${round} within 10 s (first: ${missed[0]})`);
  }
  const nodeCpu = process.cpuUsage(nodeCpuBefore);
  const storeCpu = storeCpuMs() - storeCpuBefore;
  const delays = subscribers.map((s) => s.received[round] - start).sort((a, b) => a - b);
  everyDelay.push(...delays);
  results.push({
    p50_ms: quantile(delays, 0.5),
    p99_ms: quantile(delays, 0.99),
    max_ms: delays[delays.length - 1],
    emit_ms: emitMs,
    store_cpu_ms: storeCpu,
    node_cpu_ms: (nodeCpu.user + nodeCpu.system) / 1000,
  });
  await new Promise((resolve) => setTimeout(resolve, 100)); // the store and node settle between rounds
}
everyDelay.sort((a, b) => a - b);
const all = { p50_ms: quantile(everyDelay, 0.5), p99_ms: quantile(everyDelay, 0.99), max_ms: everyDelay[everyDelay.length - 1] };
console.log(JSON.stringify({ rss_before: rssBefore, rss_after: rssAfter, subscribers: inStore, rounds: results, all }));
process.exit(0); // closes the 1,000 streams with the process
