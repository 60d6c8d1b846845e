// A real scale-store for the tests: started from $SCALE_STORE_BIN on a free loopback port (its
// log line names the port), stopped by its pid. With $SCALE_STORE_URL (and $SCALE_STORE_TOKEN)
// the behaviour suites use that running store instead.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BINARY = process.env.SCALE_STORE_BIN ?? 'scale-store';

/** A started store: `url`, `token`, `stop()`, `kill()` (SIGKILL), `restart()` (same port and flags). */
export async function startStore({ args = [], token = '', port = 0 } = {}) {
  const store = { token, args, child: null, url: '', port };
  store.start = async () => {
    const flags = ['--port', String(store.port), ...args];
    if (token) flags.push('--token', token);
    const child = spawn(BINARY, flags, { stdio: ['ignore', 'ignore', 'pipe'] });
    store.child = child;
    let log = '';
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`scale-store did not start within 10 s: ${log}`)), 10_000);
      child.on('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${BINARY} (set SCALE_STORE_BIN): ${error.message}`));
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`scale-store exited ${code} at start: ${log}`));
      });
      child.stderr.on('data', (chunk) => {
        log += chunk;
        const found = /listening on (http:\/\/[^\s:]+:(\d+))/.exec(log);
        if (found) {
          clearTimeout(timer);
          store.url = found[1];
          store.port = Number(found[2]);
          resolve();
        }
      });
    });
    child.stderr.resume();
  };
  const ended = (child) =>
    new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', resolve)));
  store.stop = async () => {
    const child = store.child;
    if (!child) return;
    child.kill('SIGTERM');
    await ended(child);
  };
  store.kill = async () => {
    const child = store.child;
    if (!child) return;
    child.kill('SIGKILL');
    await ended(child);
  };
  store.restart = async () => {
    await store.kill();
    await store.start();
  };
  await store.start();
  return store;
}

/** The store the behaviour suites use: $SCALE_STORE_URL, or a fresh one. */
export async function suiteStore(args = []) {
  if (process.env.SCALE_STORE_URL)
    return { url: process.env.SCALE_STORE_URL, token: process.env.SCALE_STORE_TOKEN ?? '', stop: async () => {} };
  return startStore({ args, token: process.env.SCALE_STORE_TOKEN ?? '' });
}

/** A fresh directory for --data-dir, removed by `remove()`. */
export function dataDir() {
  const dir = mkdtempSync(join(tmpdir(), 'scale-js-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Resolves once `check()` is true (polled every 5 ms), or rejects after `ms`. */
export async function eventually(check, ms = 5000, what = 'the condition') {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A unique key prefix per test, so suites can share one store. */
let counter = 0;
export const unique = (name) => `${name}-${process.pid}-${++counter}/`;
