#!/bin/bash
# Keeps as many workers of APP running on this machine as the ClusterManagers on URL ask for (the
# sum of the {scale}:desired:* hashes, see docs/cluster.md, "Asking for workers"), at most MAX.
# A surplus worker gets SIGTERM: it finishes its chunk, leaves the group and exits 0.
#   examples/autoscale-workers.sh APP redis://HOST:PORT [MAX, default: the cores]
app=${1:?usage: autoscale-workers.sh APP redis://HOST:PORT [MAX]} url=${2:?a redis:// URL} max=${3:-$(nproc)}
sum="local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do for _, v in ipairs(redis.call('HVALS', k)) do n = n + v end end return n"
trap 'kill -TERM $(jobs -pr) 2>/dev/null; wait; exit 0' INT TERM
while sleep 0.5; do
  want=$(redis-cli -u "$url" eval "$sum" 0 '{scale}:desired:*' 2>/dev/null) && [[ $want =~ ^[0-9]+$ ]] || continue
  ((want > max)) && want=$max
  running=($(jobs -pr))
  for ((i = ${#running[@]}; i < want; i++)); do "$app" --scale-worker "$url" & echo "started worker $!"; done
  for pid in "${running[@]:want}"; do kill -TERM "$pid"; wait "$pid"; echo "stopped worker $pid: exit $?"; done
done
