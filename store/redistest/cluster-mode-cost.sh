#!/usr/bin/env bash
# What cluster mode itself costs Redis (BENCHMARKS.md, "Redis Cluster (3
# shards)"): the same EVALSHA of store/lua/cluster/user_refresh.lua (a
# heartbeat that changes nothing) against one standalone redis-server and
# one cluster-enabled redis-server that owns all 16384 slots, alternately,
# each with one redis-benchmark client; prints INFO commandstats usec per
# call and used_cpu per call. Same keys, same script, same process count:
# the difference is cluster mode, not the store's design nor three
# servers sharing the cores.
# Usage: store/redistest/cluster-mode-cost.sh [rounds] [calls]
set -euo pipefail
cd "$(dirname "$0")/../lua/cluster"
ROUNDS=${1:-5}
N=${2:-20000}
dirs=() pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "${dirs[@]}"' EXIT
start() { # port, extra args...
  local d; d=$(mktemp -d); dirs+=("$d")
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --dir "$d" --logfile "$d/log" "${@:2}" &
  pids+=($!)
  until redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.05; done
}
S=$((20000 + RANDOM % 10000)); C=$((S + 1))
start $S
start $C --cluster-enabled yes --cluster-config-file "nodes-$C.conf"
redis-cli -p $C cluster addslotsrange 0 16383 >/dev/null
until redis-cli -p $C cluster info | grep -q 'cluster_state:ok'; do sleep 0.05; done
T='P{p0.1}'
UK=("$T"u/x/user "$T"u/x/sess "$T"u/x/ttl/sess-0002 "$T"u/x/end/sess-0002 "$T"deadlines)
for p in $S $C; do
  hb=$(redis-cli -p $p script load "$(cat lib.lua)
$(cat user_heartbeat.lua)")
  redis-cli -p $p evalsha "$hb" 6 "$T"log "${UK[0]}" "${UK[1]}" "${UK[2]}" "${UK[3]}" "${UK[4]}" \
    "$T"events 2592000000 100000 x sess-0002 Name '' '' 0 '' 3600000 '' 32 64 0 client >/dev/null
  fast=$(redis-cli -p $p script load "$(cat user_refresh.lua)")
done
# The call must apply (reply "") rather than miss (reply (nil)).
echo "check: $(redis-cli --no-raw -p $C evalsha "$fast" 5 "${UK[@]}" x sess-0002 Name '' '' 3600000 '' 0 2592000000)"
cpu() { redis-cli -p "$1" info cpu | awk -F: '/used_cpu_(user|sys):/{s+=$2} END{printf "%.6f", s}'; }
for round in $(seq "$ROUNDS"); do
  for p in $S $C; do
    name=standalone; [[ $p == "$C" ]] && name=cluster
    redis-cli -p $p config resetstat >/dev/null
    c0=$(cpu $p)
    redis-benchmark -p $p -n "$N" -c 1 -q EVALSHA "$fast" 5 "${UK[@]}" x sess-0002 Name '' '' 3600000 '' 0 2592000000 >/dev/null
    c1=$(cpu $p)
    echo "$name round $round: $(redis-cli -p $p info commandstats | grep cmdstat_evalsha | cut -d, -f3)" \
      "cpu_per_call=$(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN{printf "%.1f", (b-a)*1e6/n}')"
  done
done
