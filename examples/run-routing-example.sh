#!/bin/sh
# Runs examples/07-routing as its comment says, without an outside Redis: starts a redis-server of
# its own on a free loopback port, three workers of the example (one with --scale-provides gpu=1),
# then the example itself; stops everything it started by pid, whatever happens. Exits with the
# example's status, or 77 (ctest's skip code) when redis-server is not installed.
#
#   examples/run-routing-example.sh build/examples/07-routing
set -u

example=${1:?usage: run-routing-example.sh <path to 07-routing>}
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "skipped: redis-server and redis-cli are not installed (make deps installs them)"
  exit 77
fi

. "$here/redis-for-examples.sh"
worker_pids=""
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/scale-routing-example.XXXXXX")

cleanup() {
  for pid in $worker_pids; do kill -TERM "$pid" 2>/dev/null; done
  # Workers stop on SIGTERM; one that has not ended after 5 s is killed.
  for pid in $worker_pids; do
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ $tries -lt 50 ]; do sleep 0.1; tries=$((tries + 1)); done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  stop_redis
  rm -rf "$log_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_redis "$log_dir"

"$example" --scale-worker "$url" --scale-provides gpu=1 >"$log_dir/worker1.log" 2>&1 &
worker_pids="$worker_pids $!"
for n in 2 3; do
  "$example" --scale-worker "$url" >"$log_dir/worker$n.log" 2>&1 &
  worker_pids="$worker_pids $!"
done

echo "redis-server on $url (pid $redis_pid), workers:$worker_pids (the first provides gpu=1)"
timeout 50 "$example" "$url"
status=$?
[ $status -eq 124 ] && echo "the example did not finish within 50 s"
if [ $status -ne 0 ]; then
  for n in 1 2 3; do echo "--- worker $n's output"; cat "$log_dir/worker$n.log"; done
fi
exit $status
