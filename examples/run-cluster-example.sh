#!/bin/sh
# Runs examples/03-cluster the way its README section does, without an outside Redis: starts a
# redis-server of its own on a free loopback port, two workers of the example
# (--scale-worker redis://127.0.0.1:PORT), then the example itself; stops everything it started
# by pid, whatever happens. Exits with the example's status, or 77 (ctest's skip code) when
# redis-server is not installed.
#
#   examples/run-cluster-example.sh build/examples/03-cluster
set -u

example=${1:?usage: run-cluster-example.sh <path to 03-cluster>}
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "skipped: redis-server and redis-cli are not installed (make deps installs them)"
  exit 77
fi

redis_pid=""
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
  if [ -n "$redis_pid" ]; then kill -KILL "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  rm -rf "$log_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# redis-server cannot be asked for port 0, so try random high ports until one binds.
port=""
attempt=0
while [ -z "$port" ] && [ $attempt -lt 20 ]; do
  attempt=$((attempt + 1))
  candidate=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
  redis-server --port "$candidate" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
    >"$log_dir/redis.log" 2>&1 &
  redis_pid=$!
  tries=0
  while [ $tries -lt 100 ]; do
    if redis-cli -h 127.0.0.1 -p "$candidate" ping 2>/dev/null | grep -q PONG; then port=$candidate; break; fi
    kill -0 "$redis_pid" 2>/dev/null || break  # exited: the port was taken
    sleep 0.05
    tries=$((tries + 1))
  done
  if [ -z "$port" ]; then kill -KILL "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; redis_pid=""; fi
done
if [ -z "$port" ]; then
  echo "could not start redis-server on a free loopback port:"
  cat "$log_dir/redis.log"
  exit 1
fi
url="redis://127.0.0.1:$port"

for n in 1 2; do
  "$example" --scale-worker "$url" >"$log_dir/worker$n.log" 2>&1 &
  worker_pids="$worker_pids $!"
done

echo "redis-server on $url (pid $redis_pid), workers:$worker_pids"
timeout 50 "$example" "$url"
status=$?
[ $status -eq 124 ] && echo "the example did not finish within 50 s"
if [ $status -ne 0 ]; then
  for n in 1 2; do echo "--- worker $n's output"; cat "$log_dir/worker$n.log"; done
fi
exit $status
