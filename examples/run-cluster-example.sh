#!/bin/sh
# Runs a cluster example (examples/03-cluster, examples/07-routing) the way its README section
# does, without an outside Redis: starts a redis-server of its own on a free loopback port, the
# example's workers (--scale-worker redis://127.0.0.1:PORT), then the example itself; stops
# everything it started by pid, whatever happens. Exits with the example's status, or 77 (ctest's
# skip code) when redis-server is not installed.
#
#   examples/run-cluster-example.sh build/examples/03-cluster            two workers
#   examples/run-cluster-example.sh build/examples/07-routing "--scale-provides gpu=1" "" ""
#
# Each argument after the example is one worker, with the flags it gets besides --scale-worker
# ("" for none).
set -u

example=${1:?usage: run-cluster-example.sh <path to the example> [worker flags]...}
shift
[ $# -eq 0 ] && set -- "" ""
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "skipped: redis-server and redis-cli are not installed (make deps installs them)"
  exit 77
fi

. "$here/redis-for-examples.sh"
worker_pids=""
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/scale-cluster-example.XXXXXX")

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

workers=0
for flags in "$@"; do
  workers=$((workers + 1))
  # $flags unquoted on purpose: it is a list of words, such as "--scale-provides gpu=1".
  # shellcheck disable=SC2086
  "$example" --scale-worker "$url" $flags >"$log_dir/worker$workers.log" 2>&1 &
  worker_pids="$worker_pids $!"
  echo "worker $workers (pid $!): --scale-worker $url $flags"
done

echo "redis-server on $url (pid $redis_pid)"
timeout 50 "$example" "$url"
status=$?
[ $status -eq 124 ] && echo "the example did not finish within 50 s"
if [ $status -ne 0 ]; then
  n=1
  while [ $n -le $workers ]; do echo "--- worker $n's output"; cat "$log_dir/worker$n.log"; n=$((n + 1)); done
fi
exit $status
