package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// reportCoreMain prints the "Stream core v2" tables of BENCHMARKS.md from
// the result lines of scripts/bench-core.sh: one column per server label
// (before, after, bare), each cell the median of the rounds with the range
// beside it, and the target with whether "after" meets it.
//
//	presence-bench report-core bin/bench/<dir>/results.jsonl…
func reportCoreMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: presence-bench report-core results.jsonl…")
		return 2
	}
	var rs []result
	for _, path := range args {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r result
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.Label != "" {
				rs = append(rs, r)
			}
		}
		f.Close()
	}
	labels := []string{"before", "after", "bare"}
	// vals collects one figure over the rounds of (label, selector).
	vals := func(label string, sel func(r result) bool, fig func(f map[string]any) (float64, bool)) []float64 {
		var out []float64
		for _, r := range rs {
			if r.Label == label && sel(r) {
				if v, ok := fig(r.Figures); ok {
					out = append(out, v)
				}
			}
		}
		return out
	}
	cell := func(v []float64) string {
		if len(v) == 0 {
			return "–"
		}
		s := slices.Clone(v)
		slices.Sort(s)
		med := s[len(s)/2]
		if len(s)%2 == 0 {
			med = (s[len(s)/2-1] + s[len(s)/2]) / 2
		}
		if len(s) == 1 {
			return num(med)
		}
		return fmt.Sprintf("%s (%s–%s, %d runs)", num(med), num(s[0]), num(s[len(s)-1]), len(s))
	}
	median := func(v []float64) (float64, bool) {
		if len(v) == 0 {
			return 0, false
		}
		s := slices.Clone(v)
		slices.Sort(s)
		if len(s)%2 == 0 {
			return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
		}
		return s[len(s)/2], true
	}
	type row struct {
		name   string
		sel    func(r result) bool
		fig    func(f map[string]any) (float64, bool)
		target string
		meets  func(after float64) bool // nil: no target
	}
	table := func(title string, rows []row) {
		fmt.Printf("\n**%s**\n\n| | before (e483b6f) | after (stream core v2) | bare net/http | target | after meets it |\n|---|---|---|---|---|---|\n", title)
		for _, rw := range rows {
			fmt.Printf("| %s |", rw.name)
			for _, l := range labels {
				if rw.fig == nil { // the burst's per-n summary rows
					fmt.Printf(" %s |", burstSummary(rs, l, rw.sel, strings.HasSuffix(rw.name, "runs that dropped healthy streams")))
					continue
				}
				fmt.Printf(" %s |", cell(vals(l, rw.sel, rw.fig)))
			}
			verdict := ""
			if rw.meets != nil {
				if m, ok := median(vals("after", rw.sel, rw.fig)); ok {
					verdict = map[bool]string{true: "yes", false: "**no**"}[rw.meets(m)]
				}
			}
			fmt.Printf(" %s | %s |\n", rw.target, verdict)
		}
	}
	is := func(scenario, backend, casePrefix string) func(r result) bool {
		return func(r result) bool {
			return r.Scenario == scenario && (backend == "" || r.Backend == backend) && strings.HasPrefix(r.Case, casePrefix)
		}
	}
	f1 := func(path ...string) func(f map[string]any) (float64, bool) {
		return func(f map[string]any) (float64, bool) {
			var cur any = f
			for _, p := range path {
				m, ok := cur.(map[string]any)
				if !ok {
					return 0, false
				}
				cur = m[p]
			}
			v, ok := cur.(float64)
			return v, ok
		}
	}
	le := func(t float64) func(float64) bool { return func(v float64) bool { return v <= t } }
	ge := func(t float64) func(float64) bool { return func(v float64) bool { return v >= t } }
	gwCPU := func(r result) (float64, bool) {
		v, ok := r.CPU["gateway1"].(float64)
		return v, ok
	}
	streams := is("streams", "memory", "n=15000")
	if len(vals("after", streams, f1("rss_per_stream_KiB"))) == 0 {
		streams = is("streams", "memory", "n=")
	}
	table("Idle streams (embedded store; JSON room streams, 10 per room, each joined)", []row{
		{"streams held", streams, f1("streams_open"), "15,000", nil},
		{"RSS per stream, KiB (steady, no forced GC)", streams, f1("rss_per_stream_KiB"), "≤ 28", le(28)},
		{"RSS per stream, KiB, after a forced GC + 10 s", streams, f1("after_gc_rss_per_stream_KiB"), "(≤ 16 stretch)", nil},
		{"heap in use per stream, KiB", streams, f1("node1", "heap_inuse_per_stream_KiB"), "", nil},
		{"stacks per stream, KiB", streams, f1("node1", "stack_inuse_per_stream_KiB"), "", nil},
		{"stacks per stream after GC, KiB", streams, f1("node1", "after_gc_stack_inuse_per_stream_KiB"), "", nil},
		{"goroutines per stream (Δ go_goroutines / Δ streams)", streams, f1("node1", "goroutines_per_stream"), "≤ 2", le(2)},
		{"go_goroutines / presenced_sse_open_streams (/metrics)", streams, f1("node1", "go_goroutines_over_open_streams"), "", nil},
	})
	// Idle CPU lives in the result's CPU map.
	fmt.Printf("| idle gateway CPU, %% of one core |")
	var afterIdle []float64
	for _, l := range labels {
		var v []float64
		for _, r := range rs {
			if r.Label == l && streams(r) {
				if x, ok := gwCPU(r); ok {
					v = append(v, x)
				}
			}
		}
		if l == "after" {
			afterIdle = v
		}
		fmt.Printf(" %s |", cell(v))
	}
	m, ok := median(afterIdle)
	fmt.Printf(" ≤ 4 | %s |\n", map[bool]string{true: "yes", false: "**no**"}[ok && m <= 4])

	cm := streams
	cr := is("streams", "redis", "n=")
	table("Connect (the ramp of the idle-streams run: opens in flight from client processes of ≤ 5,000 streams, until each stream's first event)", []row{
		{"connects/s, embedded", cm, f1("connects_per_s"), "≥ 6,000", ge(6000)},
		{"gateway CPU per connect, µs, embedded", cm, f1("gateway_cpu_us_per_connect"), "≤ 150", le(150)},
		{"connects/s, Redis", cr, f1("connects_per_s"), "", nil},
		{"gateway CPU per connect, µs, Redis", cr, f1("gateway_cpu_us_per_connect"), "", nil},
		{"Redis CPU per connect, µs", cr, f1("redis_cpu_us_per_connect"), "≤ 40", le(40)},
	})
	fan := func(n string) func(r result) bool { return is("fanout", "memory", "n="+n+" ") }
	table("Fan-out of one change (embedded store, JSON subscribers; receipt − the event's at)", []row{
		{"1,000 subscribers: p50 ms", fan("1000"), f1("from_at_all", "p50_ms"), "", nil},
		{"1,000 subscribers: p99 ms", fan("1000"), f1("from_at_all", "p99_ms"), "≤ 15", le(15)},
		{"1,000: gateway CPU per delivery, µs", fan("1000"), f1("gateway_cpu_us_per_delivery"), "", nil},
		{"10,000 subscribers: p50 ms", fan("10000"), f1("from_at_all", "p50_ms"), "", nil},
		{"10,000 subscribers: p99 ms", fan("10000"), f1("from_at_all", "p99_ms"), "≤ 100", le(100)},
		{"10,000: gateway CPU per delivery, µs", fan("10000"), f1("gateway_cpu_us_per_delivery"), "", nil},
	})
	for _, n := range []string{"1000", "10000"} {
		a, okA := median(vals("after", fan(n), f1("from_at_all", "p99_ms")))
		b, okB := median(vals("bare", fan(n), f1("from_at_all", "p99_ms")))
		if okA && okB && b > 0 {
			fmt.Printf("| %s subscribers: p99 after / p99 bare | | **%.2f×** | 1× | | |\n", n, a/b)
		}
	}
	for _, backend := range []string{"memory", "redis"} {
		var cases []string
		for _, r := range rs {
			if r.Scenario == "burst" && r.Backend == backend && !slices.Contains(cases, r.Case) {
				cases = append(cases, r.Case)
			}
		}
		if len(cases) == 0 {
			continue
		}
		var rows []row
		for _, cs := range cases {
			sel := func(r result) bool { return r.Scenario == "burst" && r.Backend == backend && r.Case == cs }
			short := strings.Split(cs, " window")[0]
			rows = append(rows,
				row{short + ": healthy streams dropped", sel, f1("healthy_dropped"), "0", le(0)},
				row{short + ": stream queue resyncs", sel, f1("stream_queue_resyncs"), "", nil},
				row{short + ": joins/s sent", sel, f1("joins_per_s_sent"), "", nil},
				row{short + ": subscribers complete", sel, f1("subscribers_complete"), "all", nil},
				row{short + ": json join → last subscriber p99 ms", sel, f1("json_join_to_last_subscriber", "p99_ms"), "", nil},
				row{short + ": json join → receipt p99 ms", sel, f1("json_join_latency", "p99_ms"), "", nil},
				row{short + ": html count latency p99 ms", sel, f1("html_count_latency", "p99_ms"), "", nil},
			)
		}
		// Per subscriber count: the fastest join rate sent in a run that
		// dropped no healthy stream, and how many runs dropped any.
		var ns []string
		for _, cs := range cases {
			if n := strings.Fields(cs)[0]; !slices.Contains(ns, n) {
				ns = append(ns, n)
			}
		}
		for _, n := range ns {
			sel := func(r result) bool {
				return r.Scenario == "burst" && r.Backend == backend && strings.HasPrefix(r.Case, n+" ")
			}
			rows = append(rows, row{n + ": fastest joins/s sent in a run with 0 healthy drops", sel, nil, "", nil},
				row{n + ": runs that dropped healthy streams", sel, nil, "0", nil})
		}
		name := map[string]string{"memory": "embedded store", "redis": "Redis"}[backend]
		if backend == "redis" {
			name += " (the bare server has no store: its column is empty here, see the embedded table)"
		}
		table("Burst (issue 15): J users join one room within 1 s, N subscribers (half HTML, half JSON), "+name, rows)
	}
	return 0
}

// burstSummary is, over label's burst runs that sel picks, the fastest
// joins/s sent with 0 healthy drops, or (count) "k of m" runs with drops.
func burstSummary(rs []result, label string, sel func(result) bool, count bool) string {
	best, runs, dropped := -1.0, 0, 0
	for _, r := range rs {
		if r.Label != label || !sel(r) {
			continue
		}
		runs++
		d, _ := r.Figures["healthy_dropped"].(float64)
		if d > 0 {
			dropped++
			continue
		}
		if v, ok := r.Figures["joins_per_s_sent"].(float64); ok && v > best {
			best = v
		}
	}
	switch {
	case runs == 0:
		return "–"
	case count:
		return fmt.Sprintf("%d of %d", dropped, runs)
	case best < 0:
		return "none"
	}
	return num(best)
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return commas(int64(v + 0.5))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
