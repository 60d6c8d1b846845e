#!/usr/bin/env bash
# Plots the series that the benchmarks recorded in results.json (bench/support/results.hpp) with
# gnuplot, one PNG per series:
#   store_get_connections, store_put_connections: requests/s against connections, scale-store and Redis
#   process_pool_chunk_size: items/s against chunk size, scale's process pool and Python's Pool(2)
#
#   bench/plot.sh [build/bench/results.json] [output directory, default: beside results.json]
#
# Both axes are logarithmic (connections and chunk sizes go 1, 2, 4, ...). A series that was not
# recorded is skipped with a line saying so.
set -euo pipefail

results=${1:-build/bench/results.json}
out=${2:-$(dirname "$results")}
if [ ! -f "$results" ]; then
  echo "plot: $results not found; run \`make bench\` first" >&2
  exit 1
fi
command -v gnuplot >/dev/null || { echo "plot: gnuplot not found; \`make bench\` installs gnuplot-nox" >&2; exit 1; }

data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# series name, title, x label, y label
plot_series() {
  local series=$1 title=$2 xlabel=$3 ylabel=$4
  # One data file per line of the series: "x y" sorted by x. Prints the lines' names.
  local lines
  lines=$(node --input-type=module -e '
    import { readFileSync, writeFileSync } from "node:fs";
    const [results, series, dir] = process.argv.slice(1);
    const lines = JSON.parse(readFileSync(results, "utf8")).series?.[series] ?? {};
    for (const [name, points] of Object.entries(lines)) {
      const rows = Object.entries(points).map(([x, y]) => [Number(x), y]).sort((a, b) => a[0] - b[0]);
      writeFileSync(`${dir}/${series}.${name}.dat`, rows.map(([x, y]) => `${x} ${y}`).join("\n") + "\n");
      console.log(name);
    }' "$results" "$series" "$data")
  if [ -z "$lines" ]; then
    echo "plot: no series $series in $results (skipped)"
    return
  fi
  local plots=() name
  while IFS= read -r name; do
    plots+=("'$data/$series.$name.dat' using 1:2 with linespoints linewidth 2 pointtype 7 title '$name'")
  done <<<"$lines"
  local joined
  joined=$(IFS=,; echo "${plots[*]}")
  gnuplot <<EOF
set terminal pngcairo size 900,540 font 'sans,11'
set output '$out/$series.png'
set title "$title"
set xlabel "$xlabel"
set ylabel "$ylabel"
set logscale x 2
set logscale y 10
set format y '%.0s%c'
set grid
set key top left
plot $joined
EOF
  echo "plot: wrote $out/$series.png"
}

plot_series store_get_connections "GET /v1/kv/<key>: scale-store (wrk) and redis-server (redis-benchmark)" \
  "connections" "requests/s"
plot_series store_put_connections "PUT /v1/kv/<key>: scale-store (wrk) and redis-server SET (redis-benchmark)" \
  "connections" "requests/s"
plot_series process_pool_chunk_size "20,000 trivial items on 2 workers: scale's process pool and Python's Pool(2).map" \
  "chunk size (items)" "items/s"
