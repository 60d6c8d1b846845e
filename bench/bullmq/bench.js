// BullMQ's side of bench/cluster_vs_bullmq: N trivial jobs (x -> 2x) added with addBulk to one
// queue and processed by 2 worker processes (children of this script), on the redis-server
// the C++ benchmark started. The clock runs from the first add to the last completion.
//
//   node bench.js <redis port> <jobs> <concurrency per worker>
//
// Prints one line, "<jobs/s> <jobs completed>", and exits 0; on failure prints the reason to
// stderr and exits 1. Each worker checks its results: the sum of every returned value must be
// 2 * (0 + 1 + ... + N-1), and every job must complete exactly once.
'use strict';

const { fork } = require('node:child_process');
const { Queue, Worker } = require('bullmq');

const WORKERS = 2;

function connection(port) {
  return { host: '127.0.0.1', port, maxRetriesPerRequest: null };
}

async function runWorker() {
  const [port, concurrency, queueName] = [Number(process.env.BENCH_PORT), Number(process.env.BENCH_CONCURRENCY),
    process.env.BENCH_QUEUE];
  let count = 0;
  let sum = 0;
  let last = 0;
  const worker = new Worker(queueName, async (job) => job.data.x * 2, {
    connection: connection(port),
    concurrency,
  });
  worker.on('completed', (_job, result) => {
    count += 1;
    sum += result;
    last = Date.now();
  });
  worker.on('error', (error) => process.stderr.write(`bullmq worker: ${error.message}\n`));
  await worker.waitUntilReady();
  process.send({ ready: true });
  // Reports progress to the parent until told to stop.
  const timer = setInterval(() => process.send({ count, sum, last }), 20);
  process.on('message', async (message) => {
    if (message.stop) {
      clearInterval(timer);
      await worker.close();
      process.send({ count, sum, last, final: true }, () => process.exit(0));
    }
  });
}

async function runParent() {
  const port = Number(process.argv[2]);
  const jobs = Number(process.argv[3]);
  const concurrency = Number(process.argv[4] || 1);
  if (!(port > 0) || !(jobs > 0) || !(concurrency > 0)) {
    process.stderr.write('usage: node bench.js <redis port> <jobs> <concurrency per worker>\n');
    process.exit(1);
  }
  const queueName = `bench-${process.pid}-${concurrency}`;
  const queue = new Queue(queueName, { connection: connection(port) });
  await queue.waitUntilReady();

  const children = [];
  const reports = new Array(WORKERS).fill({ count: 0, sum: 0, last: 0 });
  const ready = [];
  for (let i = 0; i < WORKERS; ++i) {
    const child = fork(__filename, ['--worker'], {
      env: { ...process.env, BENCH_PORT: String(port), BENCH_CONCURRENCY: String(concurrency), BENCH_QUEUE: queueName },
    });
    children.push(child);
    ready.push(new Promise((resolve, reject) => {
      child.on('message', (message) => {
        if (message.ready) resolve();
        else reports[i] = message;
      });
      child.on('exit', (code) => reject(new Error(`bullmq worker ${i} exited with ${code}`)));
    }));
  }
  const deadline = setTimeout(() => {
    process.stderr.write('bullmq: not finished within 90 s\n');
    for (const child of children) child.kill('SIGKILL');
    process.exit(1);
  }, 90000);
  await Promise.all(ready);

  const data = [];
  for (let x = 0; x < jobs; ++x) data.push({ name: 'double', data: { x }, opts: { removeOnComplete: true } });
  const start = Date.now();
  const batch = 1000;  // addBulk in slices, so workers start while the rest is still being added
  for (let i = 0; i < jobs; i += batch) await queue.addBulk(data.slice(i, i + batch));

  const total = () => reports.reduce((n, r) => n + r.count, 0);
  while (total() < jobs) await new Promise((resolve) => setTimeout(resolve, 5));
  const finals = await Promise.all(children.map((child, i) => new Promise((resolve) => {
    child.removeAllListeners('exit');
    child.removeAllListeners('message');
    child.on('message', (message) => { if (message.final) resolve(message); else reports[i] = message; });
    child.send({ stop: true });
  })));
  clearTimeout(deadline);
  const end = Math.max(...finals.map((r) => r.last));
  const count = finals.reduce((n, r) => n + r.count, 0);
  const sum = finals.reduce((n, r) => n + r.sum, 0);
  await queue.obliterate({ force: true });
  await queue.close();
  if (count !== jobs || sum !== jobs * (jobs - 1)) {
    process.stderr.write(`bullmq: ${count} jobs completed (expected ${jobs}), sum ${sum} (expected ${jobs * (jobs - 1)})\n`);
    process.exit(1);
  }
  const seconds = Math.max(end - start, 1) / 1000;
  process.stdout.write(`${(jobs / seconds).toFixed(0)} ${count}\n`);
  process.exit(0);
}

const main = process.argv[2] === '--worker' ? runWorker : runParent;
main().catch((error) => {
  process.stderr.write(`bullmq: ${error.stack || error.message}\n`);
  process.exit(1);
});
