// Prints every row that the benchmarks recorded in results.json (bench/support/results.hpp) as one
// table: scale's figure, its peer's from the same run, the ratio and its target.
//
//   node bench/summary.mjs [build/bench/results.json] [--markdown]
//
// Exit status 0 whether or not the targets are met (the figures are reports, never assertions);
// 1 when the file is missing or holds no row, so `make bench` says that something did not record.

import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const markdown = args.includes('--markdown');
const path = args.find((a) => !a.startsWith('--')) ?? 'build/bench/results.json';

let doc;
try {
  doc = JSON.parse(readFileSync(path, 'utf8'));
} catch (error) {
  console.error(`bench summary: cannot read ${path} (${error.message}); run \`make bench\` first`);
  process.exit(1);
}
const rows = Object.values(doc.rows ?? {});
if (rows.length === 0) {
  console.error(`bench summary: ${path} holds no row; run \`make bench\` first`);
  process.exit(1);
}

// Headline rows first, in the order of the performance page; then the rest by program.
const headline = ['future', 'process_pool', 'cluster_vs_bullmq', 'store_vs_redis', 'map_throughput'];
const rank = (row) => {
  const i = headline.indexOf(row.bench);
  return i < 0 ? headline.length : i;
};
rows.sort((a, b) => rank(a) - rank(b) || a.bench.localeCompare(b.bench));

const number = (v) => {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(1)} M`;
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
};
const cells = rows.map((r) => [
  r.bench,
  r.figure,
  `${number(r.value)} ${r.unit}`,
  `${number(r.peer_value)} ${r.unit}`,
  r.peer,
  `${r.ratio.toFixed(2)}x`,
  `${r.target_op} ${r.target}x`,
  r.met ? 'met' : 'MISSED',
]);
const header = ['program', 'figure', 'scale', 'peer', 'peer is', 'ratio', 'target', ''];
const commits = [...new Set(rows.map((r) => r.commit).filter(Boolean))];

if (markdown) {
  console.log(`| ${header.join(' | ')} |`);
  console.log(`|${header.map(() => '---').join('|')}|`);
  for (const c of cells) console.log(`| ${c.join(' | ')} |`);
} else {
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c) => c.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd();
  console.log(line(header));
  for (const c of cells) console.log(line(c));
}
const missed = rows.filter((r) => !r.met).length;
console.log(
  `\n${rows.length} figures, ${rows.length - missed} targets met, ${missed} missed` +
    (commits.length ? `; commit ${commits.join(', ')}` : ''),
);
