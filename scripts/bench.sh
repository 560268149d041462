#!/usr/bin/env bash
# make bench: the store's Go benchmarks, then a quick set of load-tool
# scenarios against real gateways on loopback (both backends). About 5 min on
# a 2-core box. Benchmarks measure; nothing here asserts a time.
#
#   scripts/bench.sh                 # results in bin/bench/<UTC stamp>-quick/
#   BENCH_OUT=/some/dir scripts/bench.sh
#   BEFORE=e483b6f scripts/bench.sh  # also the stream-core scenarios against that commit's gateway
#
# Every result line (results.jsonl) carries the command, the machine, its load
# average and CPU pressure; table.md is the same as a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
OUT=${BENCH_OUT:-bin/bench/$(date -u +%Y%m%dT%H%M%SZ)-quick}
mkdir -p "$OUT/logs"
R="$OUT/results.jsonl"
$GO build -o bin/presence-bench ./cmd/presence-bench
PB=bin/presence-bench
COMMON=(--out "$R" --log-dir "$OUT/logs")

echo "== machine: $($PB machine)"
echo "== open files: soft $(ulimit -n), hard $(ulimit -Hn); $(uptime)"

echo "== Go benchmarks of the store"
$GO test -run '^$' -bench . -skip 'ExpirySweep|ClusterCost' -benchmem -benchtime 2s ./store/... | tee "$OUT/go-bench.txt"
# Redis CPU per operation, one redis-server vs a 3-primary cluster (about 45 s;
# BENCHMARKS.md "Redis Cluster (3 shards)" uses 5000x).
$GO test -run '^$' -bench 'ClusterCost' -benchtime 2000x ./store/ | tee -a "$OUT/go-bench.txt"
$GO test -run '^$' -bench 'ExpirySweep' -benchtime 1x ./store/ | tee -a "$OUT/go-bench.txt"

backends=(memory)
if command -v redis-server >/dev/null; then backends+=(redis); else echo "redis-server not on PATH: skipping the Redis runs"; fi

echo "== stream core: this gateway vs a bare net/http SSE server (and BEFORE=<commit>'s gateway when set), reduced size"
# Idle streams + connect (memory), connects with Redis, fan-out to 1,000
# (memory), the burst (both backends): the streams and fan-out runs of the
# loop below would repeat them.
OUT="$OUT" PB="$PB" GO="$GO" SIZE=quick REPEAT=1 scripts/bench-core.sh

for b in "${backends[@]}"; do
  echo "== $b: heartbeat throughput"
  $PB heartbeat --backend "$b" --conc 16,64 --duration 5s --warmup 2s "${COMMON[@]}"
  if [[ $b == redis ]]; then
    echo "== $b: fan-out"
    $PB fanout    --backend "$b" --n 100,1000 --changes 10 "${COMMON[@]}"
  fi
  echo "== $b: offline lateness"
  $PB lateness  --backend "$b" --sessions 1000 --ttl 3s --wait-extra 30s "${COMMON[@]}"
done
if [[ " ${backends[*]} " == *" redis "* ]]; then
  echo "== redis: offline lateness, sweeper off (keyspace notifications only)"
  $PB lateness --backend redis --sessions 1000 --ttl 3s --wait-extra 30s --sweep-interval 1h "${COMMON[@]}"
  echo "== redis: fan-out across two nodes"
  $PB fanout   --backend redis --nodes 2 --n 100,1000 --changes 10 "${COMMON[@]}"
fi
echo "== heartbeat throughput of a bare net/http server (no store): this box's ceiling for the request"
$PB heartbeat --server bare --conc 64 --duration 5s --warmup 2s "${COMMON[@]}"
echo "== the seed's polling design vs SSE push (intervals scaled by 0.05)"
$PB poll --backend memory --scale 0.05 --watchers 50 "${COMMON[@]}"

$PB report "$R" | tee "$OUT/table.md"
$PB report-core "$R" | tee "$OUT/core.md"
echo "== results: $R, table: $OUT/table.md; $(uptime)"
