// One scale.js watch receiving the changes bench/js_watch.cpp writes, checking that each arrives
// exactly once and in revision order. node watch.mjs <url> <changes per phase>
//
// Protocol (stdout, one line each): "ready" once the watch is in place; then, for each phase the
// writer announces by its end key `watch/end/<phase>` (written after every change of the phase
// has been acknowledged, so the watch has all of them before it: a watch delivers in revision
// order), one JSON line {"phase", "received", "missing", "repeats", "wrong", "first_missing",
// "first_ms", "last_ms"} (times: Unix ms, fractional). Changes of a phase are keys
// `watch/<phase>/<i>` with the value i, i from 0 to count - 1. Exits 0 after the phase "b".
import { SharedMemory } from '../../js/scale.js';

const [url, countText] = process.argv.slice(2);
const count = Number(countText);
if (!url || !(count >= 1)) {
  console.error('usage: node watch.mjs <store url> <changes per phase >= 1>');
  process.exit(2);
}
const now = () => performance.timeOrigin + performance.now();

const phases = new Map(); // phase -> {seen, received, repeats, wrong, first_ms}
const phaseOf = (name) => {
  let phase = phases.get(name);
  if (!phase) {
    phase = { seen: new Uint8Array(count), received: 0, repeats: 0, wrong: 0, first_ms: null };
    phases.set(name, phase);
  }
  return phase;
};
let lastRevision = 0;
let outOfOrder = 0;

const memory = new SharedMemory(url);
const timer = setTimeout(() => {
  console.error('watch.mjs: no end of phase "b" within 120 s: the watch stalled');
  process.exit(1);
}, 120_000);

const sub = memory.watch(
  'watch/',
  (change) => {
    const at = now();
    if (change.revision < lastRevision) ++outOfOrder;
    lastRevision = change.revision;
    const [, group, rest] = change.key.split('/');
    if (group === 'end') {
      const phase = phaseOf(rest);
      let missing = 0;
      let firstMissing = null;
      for (let i = 0; i < count; ++i)
        if (!phase.seen[i]) {
          ++missing;
          if (firstMissing === null) firstMissing = `watch/${rest}/${i}`;
        }
      console.log(
        JSON.stringify({
          phase: rest,
          received: phase.received,
          missing,
          repeats: phase.repeats,
          wrong: phase.wrong + outOfOrder,
          first_missing: firstMissing,
          first_ms: phase.first_ms,
          last_ms: at,
        }),
      );
      if (rest === 'b') {
        clearTimeout(timer);
        sub.cancel();
        process.exit(0); // stdout is a pipe: on Linux its writes are synchronous, nothing is lost
      }
      return;
    }
    const phase = phaseOf(group);
    const i = Number(rest);
    if (phase.first_ms === null) phase.first_ms = at;
    ++phase.received;
    if (!Number.isInteger(i) || i < 0 || i >= count || change.value !== i || change.erased) {
      ++phase.wrong;
      return;
    }
    if (phase.seen[i]) ++phase.repeats;
    phase.seen[i] = 1;
  },
  {
    onError: (error) => {
      console.error(`watch.mjs: the watch failed: ${error?.message ?? error}`);
      process.exit(1);
    },
  },
);
try {
  await sub.ready;
} catch (error) {
  console.error(`watch.mjs: the watch did not start: ${error?.message ?? error}`);
  process.exit(1);
}
console.log('ready');
