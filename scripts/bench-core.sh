#!/usr/bin/env bash
# The stream-core comparison (issues 8 and 15): the same scenarios against
# this checkout's gateway ("after"), a bare net/http SSE server (the
# baseline, `presence-bench bare`) and, with BEFORE=<commit>, the gateway of
# that commit ("before", built from a temporary git worktree), in one run,
# interleaved and repeated REPEAT times so that a noisy box shows up as
# spread rather than as a bias against whichever ran last.
#
#   SIZE=quick scripts/bench-core.sh               # make bench calls this
#   SIZE=full BEFORE=e483b6f REPEAT=3 scripts/bench-core.sh
#
# Needs OUT (result dir) and PB (the built tool) when called from
# bench.sh / bench-full.sh; sets them itself when run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
SIZE=${SIZE:-quick}
REPEAT=${REPEAT:-1}
CORE_STEPS=${CORE_STEPS:-"streams connect-redis fanout burst"}
if [[ -z "${OUT:-}" ]]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  OUT=bin/bench/$(date -u +%Y%m%dT%H%M%SZ)-core-$SIZE
  mkdir -p "$OUT/logs"
  $GO build -o bin/presence-bench ./cmd/presence-bench
fi
PB=${PB:-bin/presence-bench}
R="$OUT/results.jsonl"
COMMON=(--out "$R" --log-dir "$OUT/logs")
[[ -n "${PPROF:-}" ]] && COMMON+=(--pprof-dir "$OUT/pprof")
has() { [[ " $CORE_STEPS " == *" $1 "* ]]; }

# The servers: label and the flags that select it.
declare -a NAMES FLAGS
NAMES+=(after); FLAGS+=("")
NAMES+=(bare); FLAGS+=("--server bare")
if [[ -n "${BEFORE:-}" ]]; then
  BT=$(mktemp -d /tmp/presence-before.XXXXXX)
  git worktree add --detach "$BT" "$BEFORE" >/dev/null
  trap 'git worktree remove --force "$BT" >/dev/null 2>&1 || true' EXIT
  (cd "$BT" && $GO build -o "$BT/presence-bench" ./cmd/presence-bench)
  NAMES+=(before); FLAGS+=("--gateway-tool $BT/presence-bench")
  echo "== before: $BEFORE ($(git rev-parse --short "$BEFORE")) built at $BT"
fi

if [[ $SIZE == full ]]; then
  STREAMS_N=15000; HOLD=60s; FAN_N=1000,10000; CHANGES=20; BURSTS="1000:250,1000 5000:250"
else
  STREAMS_N=2000; HOLD=10s; FAN_N=1000; CHANGES=10; BURSTS="1000:250"
fi
# Clients in processes of ≤ 5,000 streams, 128 opens in flight each: the
# connect rate is the gateway's, not one client process's.
STREAMS_FLAGS=(--n "$STREAMS_N" --hold "$HOLD" --settle 5s --src-ips 8 --per-proc 5000 --ramp-conc 128)

run() { # label, server flags, scenario args…
  local label=$1 flags=$2; shift 2
  # shellcheck disable=SC2086
  $PB "$@" $flags --label "$label" "${COMMON[@]}" || echo "!! $label: $* failed"
}

for ((rep = 1; rep <= REPEAT; rep++)); do
  echo "== stream core, round $rep of $REPEAT"
  for i in "${!NAMES[@]}"; do
    n=${NAMES[$i]} f=${FLAGS[$i]}
    if has streams; then
      echo "-- $n: $STREAMS_N idle streams (memory per stream, goroutines, idle CPU; the ramp = connect rate)"
      run "$n" "$f" streams --backend memory "${STREAMS_FLAGS[@]}"
    fi
    if has connect-redis && [[ $n != bare ]] && command -v redis-server >/dev/null; then
      echo "-- $n: connects with Redis (gateway and Redis CPU per connect)"
      run "$n" "$f" streams --backend redis --n "$STREAMS_N" --hold 5s --settle 2s --src-ips 8 --per-proc 5000 --ramp-conc 128
    fi
    if has fanout; then
      echo "-- $n: fan-out of one change to $FAN_N subscribers"
      run "$n" "$f" fanout --backend memory --n "$FAN_N" --changes "$CHANGES" --src-ips 8
    fi
    if has burst; then
      backends=(memory)
      [[ $n != bare ]] && command -v redis-server >/dev/null && backends+=(redis)
      for b in "${backends[@]}"; do
        for case in $BURSTS; do # subscribers:joins,joins…
          echo "-- $n/$b: burst of ${case#*:} joins within 1 s, ${case%%:*} subscribers (half HTML)"
          run "$n" "$f" burst --backend "$b" --n "${case%%:*}" --joins "${case#*:}" --window 1s --src-ips 8
        done
      done
    fi
  done
done
echo "== stream core results: $R ($PB report-core $R prints the tables)"
