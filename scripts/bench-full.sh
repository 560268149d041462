#!/usr/bin/env bash
# make bench-full: the figures of BENCHMARKS.md at full size (50,000 streams,
# 10,000 subscribers, 50,000 expiring sessions, the polling baseline at the
# design card's real 30 s / 10 s intervals). About 40–60 min on a 2-core box;
# run it on an otherwise idle machine and keep the load figures next to the
# numbers. Each step is bounded in count and time.
#
#   scripts/bench-full.sh            # results in bin/bench/<UTC stamp>-full/
#   STEPS="streams fanout" scripts/bench-full.sh   # only some steps
#   STEPS=core BEFORE=e483b6f REPEAT=3 scripts/bench-full.sh   # the "Stream core v2" tables of BENCHMARKS.md
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
OUT=${BENCH_OUT:-bin/bench/$(date -u +%Y%m%dT%H%M%SZ)-full}
mkdir -p "$OUT/logs"
R="$OUT/results.jsonl"
$GO build -o bin/presence-bench ./cmd/presence-bench
PB=bin/presence-bench
COMMON=(--out "$R" --log-dir "$OUT/logs")
STEPS=${STEPS:-"store core streams heartbeat fanout lateness poll"}
# core: before (BEFORE=<commit>, default the commit before stream core v2) /
# after / bare net/http baseline, REPEAT rounds, interleaved.
BEFORE=${BEFORE-e483b6f}
REPEAT=${REPEAT:-2}
NOFILE=$(ulimit -Hn)
# One gateway process holds at most (open-files limit − a few) streams: each
# stream is one socket. Past that, more nodes on one Redis.
PER_NODE=$(( NOFILE - 500 < 19000 ? NOFILE - 500 : 19000 ))
has() { [[ " $STEPS " == *" $1 "* ]]; }

echo "== machine: $($PB machine)"
echo "== open files: soft $(ulimit -n), hard $NOFILE; streams per node ≤ $PER_NODE; $(uptime)"

if has store; then
  echo "== Go benchmarks of the store, big cases"
  PRESENCE_BENCH_BIG=1 $GO test -run '^$' -bench . -skip 'ExpirySweep' -benchmem -benchtime 2s -timeout 60m ./store/... | tee "$OUT/go-bench.txt"
  PRESENCE_BENCH_BIG=1 $GO test -run '^$' -bench 'ExpirySweep' -benchtime 1x -timeout 60m ./store/ | tee -a "$OUT/go-bench.txt"
fi
if has core; then
  OUT="$OUT" PB="$PB" GO="$GO" SIZE=full BEFORE="$BEFORE" REPEAT="$REPEAT" PPROF=${PPROF:-1} scripts/bench-core.sh
fi
if has streams; then
  $PB streams --backend memory --n "$PER_NODE" --hold 60s --src-ips 8 "${COMMON[@]}"
  $PB streams --backend redis  --n "$PER_NODE" --hold 60s --src-ips 8 "${COMMON[@]}"
  nodes=$(( (50000 + PER_NODE - 1) / PER_NODE ))
  $PB streams --backend redis --nodes "$nodes" --n 50000 --hold 60s --src-ips 8 "${COMMON[@]}"
fi
if has heartbeat; then
  for b in memory redis; do
    $PB heartbeat --backend "$b" --conc 16,64,256 --duration 20s --warmup 3s "${COMMON[@]}"
  done
fi
if has fanout; then
  for b in memory redis; do
    $PB fanout --backend "$b" --n 100,1000,10000 --changes 20 --src-ips 8 "${COMMON[@]}"
  done
  $PB fanout --backend redis --nodes 2 --n 100,1000,10000 --changes 20 --src-ips 8 "${COMMON[@]}"
  # The htmx path: presence-{user} dots (timed from the POST) plus the stack re-render.
  $PB fanout --backend memory --format html --n 100,1000,10000 --changes 20 --src-ips 8 "${COMMON[@]}"
fi
if has lateness; then
  $PB lateness --backend memory --sessions 1000  --ttl 3s  "${COMMON[@]}"
  $PB lateness --backend memory --sessions 50000 --ttl 30s "${COMMON[@]}"
  for sw in 100ms 1h; do
    $PB lateness --backend redis --sessions 1000  --ttl 3s  --sweep-interval "$sw" "${COMMON[@]}"
    $PB lateness --backend redis --sessions 50000 --ttl 30s --sweep-interval "$sw" "${COMMON[@]}"
    $PB lateness --backend redis --sessions 1000  --ttl 3s  --sweep-interval "$sw" --other-keys 500000 --wait-extra 60s "${COMMON[@]}"
  done
fi
if has poll; then
  # The design card's real intervals: GET /api/presence every 30 s, the room every 10 s.
  $PB poll --backend memory --watchers 100 --duration 6m "${COMMON[@]}"
fi
$PB report "$R" | tee "$OUT/table.md"
has core && $PB report-core "$R" | tee "$OUT/core.md"
echo "== results: $R, table: $OUT/table.md; $(uptime)"
