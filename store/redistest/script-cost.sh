#!/usr/bin/env bash
# Script-level Redis cost of one stream refresh (BENCHMARKS.md, "Redis cost
# per operation"): the old heartbeat script (lib.lua + heartbeat.lua at
# commit $OLD), the fast refresh alone, and the new full heartbeat, run
# alternately against one throwaway redis-server with one redis-benchmark
# client; prints INFO commandstats usec per call and used_cpu per call.
# Usage: store/redistest/script-cost.sh [old-commit] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../lua"
OLD=${1:-e01c64c}
ROUNDS=${2:-5}
P=$((20000 + RANDOM % 20000))
dir=$(mktemp -d)
redis-server --port $P --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" --logfile "$dir/log" &
pid=$!
trap 'kill $pid; rm -rf "$dir"' EXIT
until redis-cli -p $P ping >/dev/null 2>&1; do sleep 0.05; done
K=(7 'P{u:x}:user' 'P{u:x}:sess' 'P{u:x}:ttl:sess-0002' Pdeadlines 'P{r:room-01}:members' 'P{u:x}:end:sess-0002' Pmember-deadlines)
A=(P 2592000000 100000 x sess-0002 Name '' '' 0 '' 60000 room-01 32 64 60000 stream)
old=$(redis-cli -p $P script load "$(git show "$OLD:store/lua/lib.lua")
$(git show "$OLD:store/lua/heartbeat.lua")")
fast=$(redis-cli -p $P script load "$(cat fast.lua)
$(cat refresh_fast.lua)")
new=$(redis-cli -p $P script load "$(cat fast.lua)
$(cat lib.lua)
begin(ARGV)
$(cat heartbeat.lua)")
redis-cli -p $P evalsha "$old" "${K[@]}" "${A[@]}" >/dev/null # create the session
cpu() { redis-cli -p $P info cpu | awk -F: '/used_cpu_(user|sys):/{s+=$2} END{printf "%.6f", s}'; }
for round in $(seq "$ROUNDS"); do
  for v in old fast new; do
    redis-cli -p $P config resetstat >/dev/null
    c0=$(cpu)
    redis-benchmark -p $P -n 10000 -c 1 -q EVALSHA "${!v}" "${K[@]}" "${A[@]}" >/dev/null
    c1=$(cpu)
    echo "$v round $round: $(redis-cli -p $P info commandstats | grep cmdstat_evalsha | cut -d, -f3)" \
      "cpu_per_call=$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.1f", (b-a)*1e6/10000}')"
  done
done
