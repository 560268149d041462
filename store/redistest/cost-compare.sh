#!/usr/bin/env bash
# Redis CPU per store operation, before and after (BENCHMARKS.md, "Redis
# cost pass 2"): BenchmarkRedisCost of this checkout and of commit $BEFORE
# (with this checkout's benchmark file, so both run the same operations),
# alternately, $ROUNDS times each, on one throwaway redis-server per run.
# Prints each run's lines and then, per sub-benchmark, the min and max of
# redis-cpu-µs/op over the rounds (on a shared box the min is the figure
# least disturbed by other load).
# Usage: store/redistest/cost-compare.sh [before-commit] [rounds] [benchtime]
set -euo pipefail
cd "$(dirname "$0")/../.."
BEFORE=${1:-28e96d8}
ROUNDS=${2:-3}
N=${3:-10000x}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
git archive "$BEFORE" | tar -x -C "$dir"
cp store/cost_bench_test.go "$dir/store/"
out=$(mktemp)
for r in $(seq "$ROUNDS"); do
  for v in before after; do
    d=.
    [[ $v == before ]] && d=$dir
    (cd "$d" && go test ./store/ -run '^$' -bench BenchmarkRedisCost -benchtime "$N") 2>&1 |
      grep -E '^Benchmark|commands per op' | sed "s/^/$v /" | tee -a "$out"
  done
done
echo "== redis-cpu-µs/op, min–max over $ROUNDS rounds ($(uptime))"
awk '$2 ~ /^Benchmark/ { for (i = 1; i <= NF; i++) if ($i == "redis-cpu-µs/op") v = $(i-1)
  k = $1 " " $2; if (!(k in lo) || v < lo[k]) lo[k] = v; if (v > hi[k]) hi[k] = v }
  END { for (k in lo) printf "%-60s %7.1f – %7.1f\n", k, lo[k], hi[k] }' "$out" | sort -k2,2 -k1,1
rm -f "$out"
