#!/bin/sh
# Runs examples/05-autoscale with the worker loop of docs/cluster.md ("Asking for workers"),
# without an outside Redis: starts a redis-server of its own on a free loopback port, then
# examples/autoscale-workers.sh in the background (it starts and stops workers of the example
# from the {scale}:desired:* hash), then the example. Checks that the loop started workers and
# that every one of them was stopped again, with exit status 0, once the count fell back to 0.
# Stops everything it started by pid, whatever happens. Exits 0 when all went so, 1 otherwise,
# or 77 (ctest's skip code) when redis-server, redis-cli or bash is not installed.
#
#   examples/run-autoscale-example.sh build/examples/05-autoscale
set -u

example=${1:?usage: run-autoscale-example.sh <path to 05-autoscale>}
here=$(cd "$(dirname "$0")" && pwd)
for tool in redis-server redis-cli bash; do
  if ! command -v $tool >/dev/null 2>&1; then
    echo "skipped: $tool is not installed (make deps installs redis-server and redis-cli)"
    exit 77
  fi
done

. "$here/redis-for-examples.sh"
loop_pid=""
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/scale-autoscale-example.XXXXXX")
touch "$log_dir/loop.log"

started_pids() { sed -n 's/^started worker \([0-9]*\)$/\1/p' "$log_dir/loop.log"; }
count() { grep -c "$1" "$log_dir/loop.log"; }

cleanup() {
  if [ -n "$loop_pid" ]; then
    # The loop stops its workers on SIGTERM (each finishes its chunk); after 10 s they are killed.
    kill -TERM "$loop_pid" 2>/dev/null
    tries=0
    while kill -0 "$loop_pid" 2>/dev/null && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
    if kill -0 "$loop_pid" 2>/dev/null; then
      # Still there: the loop and the workers it started are killed (their pids are its children's).
      kill -KILL "$loop_pid" 2>/dev/null
      for pid in $(started_pids); do kill -KILL "$pid" 2>/dev/null; done
    fi
    wait "$loop_pid" 2>/dev/null
  fi
  stop_redis
  rm -rf "$log_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_redis "$log_dir"

bash "$here/autoscale-workers.sh" "$example" "$url" 4 >"$log_dir/loop.log" 2>&1 &
loop_pid=$!
echo "redis-server on $url (pid $redis_pid), worker loop pid $loop_pid"

timeout 50 "$example" "$url"
status=$?
[ $status -eq 124 ] && echo "the example did not finish within 50 s"

# The example ends once no worker is left; the loop notes each stop after the worker's exit.
tries=0
while [ "$(count '^stopped worker')" -lt "$(count '^started worker')" ] && [ $tries -lt 100 ]; do
  sleep 0.1
  tries=$((tries + 1))
done
started=$(count '^started worker')
stopped=$(count '^stopped worker')
clean=$(count '^stopped worker [0-9]*: exit 0$')
echo "the loop started $started worker(s) and stopped $stopped, $clean with exit status 0"
running=""
for pid in $(started_pids); do kill -0 "$pid" 2>/dev/null && running="$running $pid"; done

failed=0
if [ $status -ne 0 ]; then echo "the example failed (status $status)"; failed=1; fi
if [ "$started" -eq 0 ]; then echo "the loop started no worker"; failed=1; fi
if [ "$clean" -ne "$started" ]; then echo "not every worker was stopped with exit status 0"; failed=1; fi
if [ -n "$running" ]; then echo "workers still running:$running"; failed=1; fi
if [ $failed -ne 0 ]; then echo "--- the loop's output"; cat "$log_dir/loop.log"; fi
exit $failed
