package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// reportMain turns result lines (--out files) into a Markdown table: one row
// per result with its headline figures, the machine load next to it.
func reportMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: presence-bench report results.jsonl…")
		return 2
	}
	fmt.Println("| scenario | case | server | backend | figures | CPU % of one core | load avg (1/5/15) before → after | CPU pressure after (avg10/avg60) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
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
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			srv := r.Server
			if srv == "" {
				srv = "presenced"
			}
			fmt.Printf("| %s | %s | %s | %s | %s | %s | %s → %s | %s |\n", r.Scenario, r.Case, srv, r.Backend, headline(r), cpuStr(r.CPU), r.LoadAvg, r.LoadEnd, r.PSI)
		}
		f.Close()
	}
	return 0
}

func cpuStr(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s []string
	for _, k := range keys {
		s = append(s, fmt.Sprintf("%s %v", k, m[k]))
	}
	return strings.Join(s, ", ")
}

func dist(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return "–"
	}
	return fmt.Sprintf("p50 %v / p99 %v / max %v ms (n=%v)", m["p50_ms"], m["p99_ms"], m["max_ms"], m["n"])
}

func headline(r result) string {
	f := r.Figures
	switch r.Scenario {
	case "streams":
		s := fmt.Sprintf("%v streams open (%v failed, %v closed); RSS %v KiB/stream", f["streams_open"], f["open_failed"], f["closed_during_run"], f["rss_per_stream_KiB"])
		for i := 1; i <= 8; i++ {
			if n, ok := f[fmt.Sprintf("node%d", i)].(map[string]any); ok {
				s += fmt.Sprintf("; node%d: %v streams, RSS %v→%v MiB, heap %v + stacks %v KiB/stream, %v goroutines/stream", i, n["streams"], n["rss_before_MiB"], n["rss_MiB"], n["heap_inuse_per_stream_KiB"], n["stack_inuse_per_stream_KiB"], n["goroutines_per_stream"])
			}
		}
		s += fmt.Sprintf("; keep-alives %v/s", f["keepalives_per_s"])
		if v, ok := f["connects_per_s"]; ok {
			s += fmt.Sprintf("; **connect %v streams/s**, gateway %v µs/connect, redis %v µs/connect", v, f["gateway_cpu_us_per_connect"], f["redis_cpu_us_per_connect"])
		}
		return s
	case "burst":
		return fmt.Sprintf("%v joins sent at %v/s to %v subscribers (%v html): **healthy dropped %v** %v, queue resyncs %v, client saw %v closed; complete %v/%v; json join→receipt %s; **join→last subscriber %s**; html count latency %s; first join→last receipt %v ms",
			f["joins"], f["joins_per_s_sent"], f["ready"], f["html_subscribers"], f["healthy_dropped"], f["dropped_by_reason"], f["stream_queue_resyncs"], f["client_saw_closed_in_burst"],
			f["subscribers_complete"], f["subscribers_expected"], dist(f["json_join_latency"]), dist(f["json_join_to_last_subscriber"]), dist(f["html_count_latency"]), f["first_join_to_last_receipt_ms"])
	case "heartbeat":
		return fmt.Sprintf("**%v heartbeats/s**, latency %s, errors %v; CPU per heartbeat: gateway %v µs, redis %v µs", f["heartbeats_per_s"], dist(f["latency"]), f["errors"], f["gateway_cpu_us_per_heartbeat"], f["redis_cpu_us_per_heartbeat"])
	case "fanout":
		s := ""
		if _, ok := f["from_at_all"]; ok {
			s = "from payload at: " + dist(f["from_at_all"]) + "; "
		}
		s += "from POST: " + dist(f["from_post_all"])
		for _, g := range []string{"same-node", "cross-node"} {
			if v, ok := f["from_at_"+g]; ok {
				s += fmt.Sprintf("; %s (from at): %s", g, dist(v))
			}
		}
		return s + fmt.Sprintf("; %v/%v subscribers ready; gateway CPU %v µs per delivery", f["ready"], f["subscribers"], f["gateway_cpu_us_per_delivery"])
	case "lateness":
		return fmt.Sprintf("deadline→receipt %s; event at − deadline %s; %v of %v offline events (missing %v)", dist(f["lateness"]), dist(f["at_minus_deadline"]), f["offline_events"], f["created"], f["missing"])
	case "poll":
		return fmt.Sprintf("intervals ×%v: staleness push %s; poll %s; ratio p50 %v× (at the design card's intervals: %v×), mean %v×; bytes/client/hour at design rates: poll %v vs push %v (%v×)",
			f["scale"], dist(f["staleness_push"]), dist(f["staleness_poll"]), f["staleness_ratio_p50"], f["staleness_ratio_p50_at_design_intervals"], f["staleness_ratio_mean"],
			f["design_card_poll_bytes_per_client_hour"], f["design_card_push_bytes_per_client_hour"], f["design_card_bytes_ratio"])
	}
	b, _ := json.Marshal(f)
	return string(b)
}
