# A redis-server of an example script's own, on a free loopback port, without persistence.
# Sourced (not run) by run-cluster-example.sh and run-autoscale-example.sh:
#
#   . "$here/redis-for-examples.sh"
#   start_redis "$log_dir"    # sets port, url and redis_pid, or prints redis.log and exits 1
#   stop_redis                # in the script's cleanup: kills it by its pid and waits for it

redis_pid=""

# redis-server cannot be asked for port 0, so try random high ports until one binds.
start_redis() {
  redis_log="$1/redis.log"
  port=""
  attempt=0
  while [ -z "$port" ] && [ $attempt -lt 20 ]; do
    attempt=$((attempt + 1))
    candidate=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
    redis-server --port "$candidate" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
      >"$redis_log" 2>&1 &
    redis_pid=$!
    tries=0
    while [ $tries -lt 100 ]; do
      if redis-cli -h 127.0.0.1 -p "$candidate" ping 2>/dev/null | grep -q PONG; then port=$candidate; break; fi
      kill -0 "$redis_pid" 2>/dev/null || break  # exited: the port was taken
      sleep 0.05
      tries=$((tries + 1))
    done
    if [ -z "$port" ]; then stop_redis; fi
  done
  if [ -z "$port" ]; then
    echo "could not start redis-server on a free loopback port:"
    cat "$redis_log"
    exit 1
  fi
  url="redis://127.0.0.1:$port"
}

stop_redis() {
  if [ -n "$redis_pid" ]; then kill -KILL "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  redis_pid=""
}
