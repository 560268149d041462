// Command presence-bench is presenced's load tool: it launches (or targets)
// gateway nodes and a redis-server on loopback, drives them with raw HTTP/1.1
// and SSE clients, and reports what it measured. It never asserts a time:
// benchmarks are not tests.
//
//	presence-bench streams   --backend memory --n 2000         idle SSE streams held: RSS per stream, idle CPU
//	presence-bench heartbeat --backend redis --duration 10s    POST /api/presence throughput and latency
//	presence-bench fanout    --backend redis --n 100,1000      one status change → N room subscribers
//	presence-bench lateness  --backend redis --sessions 1000   deadline → offline event at a subscriber
//	presence-bench poll      --scale 0.1                       the seed's polling design vs SSE push
//	presence-bench burst     --backend memory --n 1000     250 users join one room within 1 s → N subscribers
//	presence-bench bare      [--pprof ADDR] -- --addr A   the bare net/http SSE baseline (any scenario: --server bare)
//	presence-bench gateway   [--pprof ADDR] [--sweep-interval D] -- <presenced flags>
//
// Every scenario is bounded in count and time, sends traffic only to
// 127.0.0.0/8, and appends one JSON line per result to --out (with the
// machine, its load average and the exact command line).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var code int
	switch cmd {
	case "gateway":
		code = gatewayMain(args)
	case "streams":
		code = streamsMain(args)
	case "streams-worker":
		code = streamsWorkerMain(args)
	case "heartbeat":
		code = heartbeatMain(args)
	case "fanout":
		code = fanoutMain(args)
	case "lateness":
		code = latenessMain(args)
	case "poll":
		code = pollMain(args)
	case "bare":
		code = bareMain(args)
	case "burst":
		code = burstMain(args)
	case "report":
		code = reportMain(args)
	case "report-core":
		code = reportCoreMain(args)
	case "machine":
		fmt.Println(machineInfo().String())
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "presence-bench: unknown scenario %q\n", cmd)
		usage()
		code = 2
	}
	os.Exit(code)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: presence-bench SCENARIO [flags]   (SCENARIO -h for its flags)

scenarios:
  streams     ramp idle SSE streams, report gateway RSS per stream and idle CPU
  heartbeat   sustained POST /api/presence: heartbeats/s, p50/p99 latency
  fanout      one status change delivered to N subscribers of one room (also across two nodes)
  lateness    sessions stop heartbeating: their deadline → the offline event at a subscriber
  poll        the seed's design (GET polling every 30 s / 10 s) vs SSE push, in one run
  burst       N subscribers (HTML and JSON) on one room, J users join it within a window: drops, join→last-subscriber latency
  bare        run the bare net/http SSE baseline server (scenarios launch it with --server bare)
  gateway     run a gateway node (same code as cmd/presenced) with bench knobs: --pprof, --sweep-interval
  report      results.jsonl… → a Markdown table
  report-core results.jsonl… → the before/after/bare tables of BENCHMARKS.md (medians of the rounds)
  machine     print the machine description used in results
`)
}
