package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// common are the flags every load scenario shares.
type common struct {
	target      string // comma-separated base URLs of running gateways; empty = launch them
	pids        string // comma-separated PIDs of --target gateways (for RSS/CPU), optional
	secret      string
	backend     string // memory | redis (when launching)
	redisURL    string // use this redis instead of launching one
	gatewayBin  string // a presenced binary; empty = this tool's own "gateway" (same handlers, bench knobs)
	gatewayTool string // another checkout's presence-bench binary whose "gateway" subcommand to launch (before/after runs)
	server      string // presenced | bare (the bare net/http SSE baseline, bare.go)
	nodes       int
	ttl         time.Duration
	keepalive   time.Duration
	sweep       time.Duration // own gateway only: store.Options.SweepInterval (redis)
	pprofDir    string        // own gateway only: save CPU profiles of the measured phase here
	out         string
	logDir      string
	srcIPs      int
	label       string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.target, "target", "", "comma-separated gateway base URLs (http://127.0.0.1:PORT); empty = launch them here")
	fs.StringVar(&c.pids, "pids", "", "PIDs of the --target gateways, for RSS/CPU figures (optional)")
	fs.StringVar(&c.secret, "secret", "bench-secret-0123456789abcdef-0123456789", "the gateway's --secret (tokens are minted with it)")
	fs.StringVar(&c.backend, "backend", "memory", "store backend of launched gateways: memory or redis")
	fs.StringVar(&c.redisURL, "redis-url", "", "redis to use instead of launching a redis-server (redis backend)")
	fs.StringVar(&c.gatewayBin, "gateway-bin", "", "presenced binary to launch; empty = this tool's 'gateway' scenario (the same handlers, plus --pprof/--sweep-interval)")
	fs.StringVar(&c.gatewayTool, "gateway-tool", "", "a presence-bench binary built from another checkout (e.g. the commit before a change): its own 'gateway' scenario is launched, with pprof")
	fs.StringVar(&c.server, "server", "presenced", "what to launch: presenced (the gateway) or bare (a bare net/http SSE server with the same routes, the baseline)")
	fs.IntVar(&c.nodes, "nodes", 1, "gateway nodes to launch (more than one needs the redis backend)")
	fs.DurationVar(&c.ttl, "ttl", 60*time.Second, "gateway --ttl")
	fs.DurationVar(&c.keepalive, "keepalive", 15*time.Second, "gateway --keepalive")
	fs.DurationVar(&c.sweep, "sweep-interval", 0, "own gateway, redis: the store's SweepInterval (0 = default 100ms; 1h = off, keyspace events only)")
	fs.StringVar(&c.pprofDir, "pprof-dir", "", "own gateway: write CPU profiles of the measured phase into this directory")
	fs.StringVar(&c.out, "out", "", "append one JSON line per result to this file (without it, the line goes to stdout)")
	fs.StringVar(&c.logDir, "log-dir", "", "gateway and redis logs go here (default: a temp dir)")
	fs.IntVar(&c.srcIPs, "src-ips", 4, "loopback source addresses used by stream clients (127.0.0.2 …)")
	fs.StringVar(&c.label, "label", "", "free text stored with the results")
}

// env is what a scenario runs against.
type env struct {
	c       *common
	nodes   []*node
	redis   *proc
	redisU  string
	tmp     string
	started time.Time
}

type node struct {
	url   string // http://127.0.0.1:PORT
	addr  string // 127.0.0.1:PORT
	pid   int
	pprof string // host:port of its pprof listener, when it has one
	p     *proc
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	name string
}

func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func startProc(name, logPath string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), name: name}
	go func() { _ = cmd.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// setup launches (or attaches to) the gateways and, for the redis backend,
// a redis-server. Call env.close when done.
func setup(c *common) (*env, error) {
	raiseNofile()
	e := &env{c: c, started: time.Now()}
	if c.target != "" {
		pids := strings.Split(c.pids, ",")
		for i, u := range strings.Split(c.target, ",") {
			u = strings.TrimRight(strings.TrimSpace(u), "/")
			if err := checkLoopback(u); err != nil {
				return nil, err
			}
			n := &node{url: u, addr: strings.TrimPrefix(u, "http://")}
			if i < len(pids) && pids[i] != "" {
				n.pid, _ = strconv.Atoi(pids[i])
			}
			e.nodes = append(e.nodes, n)
		}
		return e, e.waitReady(30 * time.Second)
	}
	dir := c.logDir
	if dir == "" {
		d, err := os.MkdirTemp("", "presence-bench-")
		if err != nil {
			return nil, err
		}
		dir = d
		e.tmp = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if c.backend == "redis" {
		e.redisU = c.redisURL
		if e.redisU == "" {
			p, u, err := startRedis(dir)
			if err != nil {
				return nil, err
			}
			e.redis, e.redisU = p, u
		}
	} else if c.backend != "memory" {
		return nil, fmt.Errorf("--backend must be memory or redis")
	} else if c.nodes > 1 {
		return nil, fmt.Errorf("more than one node needs --backend redis")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for i := 0; i < c.nodes; i++ {
		port := freePort()
		n := &node{addr: fmt.Sprintf("127.0.0.1:%d", port)}
		n.url = "http://" + n.addr
		gw := []string{"--addr", n.addr, "--secret", c.secret, "--ttl", c.ttl.String(),
			"--heartbeat", (c.ttl / 2).String(), "--keepalive", c.keepalive.String(),
			// The load cases drive single sessions far past what a browser
			// sends (that is their point): no per-session rate limits.
			"--rate-limit=false"}
		if e.redisU != "" {
			gw = append(gw, "--redis-url", e.redisU)
		}
		bin, args := c.gatewayBin, gw
		if c.server == "bare" {
			if c.gatewayBin != "" || c.gatewayTool != "" || c.backend != "memory" {
				e.close()
				return nil, fmt.Errorf("--server bare is its own server: no --gateway-bin, --gateway-tool or --backend redis")
			}
			n.pprof = fmt.Sprintf("127.0.0.1:%d", freePort())
			bin, args = self, append([]string{"bare", "--pprof", n.pprof, "--"}, gw...)
		} else if c.server != "presenced" {
			e.close()
			return nil, fmt.Errorf("--server must be presenced or bare")
		} else if bin == "" {
			bin = self
			if c.gatewayTool != "" {
				bin = c.gatewayTool
			}
			n.pprof = fmt.Sprintf("127.0.0.1:%d", freePort())
			args = []string{"gateway", "--pprof", n.pprof}
			if c.sweep > 0 {
				args = append(args, "--sweep-interval", c.sweep.String())
			}
			args = append(append(args, "--"), gw...)
		} else if c.sweep > 0 {
			return nil, fmt.Errorf("--sweep-interval needs the tool's own gateway (leave --gateway-bin empty)")
		}
		p, err := startProc(fmt.Sprintf("gateway%d", i+1), filepath.Join(dir, fmt.Sprintf("gateway%d.log", i+1)), bin, args...)
		if err != nil {
			e.close()
			return nil, err
		}
		n.p, n.pid = p, p.cmd.Process.Pid
		e.nodes = append(e.nodes, n)
	}
	if err := e.waitReady(60 * time.Second); err != nil {
		e.close()
		return nil, fmt.Errorf("%w (logs in %s)", err, dir)
	}
	return e, nil
}

func (e *env) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, n := range e.nodes {
		for {
			resp, err := http.Get(n.url + "/readyz")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if n.p != nil {
				select {
				case <-n.p.done:
					return fmt.Errorf("gateway %s exited before it was ready", n.addr)
				default:
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("gateway %s not ready within %s: %v", n.url, within, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (e *env) close() {
	for _, n := range e.nodes {
		n.p.stop()
	}
	e.redis.stop()
	if e.tmp != "" {
		os.RemoveAll(e.tmp)
	}
}

func (e *env) redisPID() int {
	if e.redis == nil {
		return 0
	}
	return e.redis.cmd.Process.Pid
}

func startRedis(dir string) (*proc, string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", errors.New("redis-server not on PATH (apt-get install redis-server)")
	}
	port := freePort()
	rdir := filepath.Join(dir, "redis")
	os.MkdirAll(rdir, 0o755)
	p, err := startProc("redis", filepath.Join(dir, "redis.log"), bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", rdir,
		"--save", "", "--appendonly", "no", "--notify-keyspace-events", "", "--maxclients", "10000")
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, err := redisCmd(addr, "PING"); err == nil && r == "+PONG" {
			return p, "redis://" + addr + "/0", nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, "", errors.New("redis-server did not answer PING")
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// redisCmd sends one command and returns the first reply line.
func redisCmd(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(respCmd(args...)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

func respCmd(args ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return []byte(b.String())
}

// checkLoopback refuses any target outside 127.0.0.0/8: this tool only ever
// loads this machine.
func checkLoopback(u string) error {
	hp := strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
	host, _, err := net.SplitHostPort(hp)
	if err != nil {
		host = hp
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback() && ip.To4() != nil) {
		return nil
	}
	return fmt.Errorf("target %q is not on 127.0.0.0/8: this tool only loads this machine", u)
}

// raiseNofile lifts the soft open-files limit to the hard one (Go does this
// at start-up too; here it is explicit and reported).
func raiseNofile() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
	return r.Cur
}

func nofile() (cur, max uint64) {
	var r syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	return r.Cur, r.Max
}

// ---- process figures from /proc

// procStat is a process's RSS and CPU time.
type procStat struct {
	RSS int64         // bytes
	CPU time.Duration // user + system
	ok  bool
}

var clkTck = 100.0 // sysconf(_SC_CLK_TCK) is 100 on Linux/amd64

func readProc(pid int) procStat {
	if pid <= 0 {
		return procStat{}
	}
	var s procStat
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					kb, _ := strconv.ParseInt(f[1], 10, 64)
					s.RSS = kb * 1024
				}
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		str := string(b)
		if i := strings.LastIndexByte(str, ')'); i > 0 {
			f := strings.Fields(str[i+2:])
			if len(f) > 13 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				s.CPU = time.Duration((ut + st) / clkTck * float64(time.Second))
				s.ok = true
			}
		}
	}
	return s
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures the CPU share of some processes over a window.
type cpuMeter struct {
	pids  map[string]int
	start map[string]time.Duration
	t0    time.Time
	self0 time.Duration
	load0 string
}

func newCPUMeter(pids map[string]int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: map[string]time.Duration{}, t0: time.Now(), self0: selfCPU(), load0: loadavg()}
	for k, p := range pids {
		m.start[k] = readProc(p).CPU
	}
	return m
}

// stop returns each process's CPU use in percent of one core, plus "client"
// for this process.
func (m *cpuMeter) stop() map[string]float64 {
	el := time.Since(m.t0).Seconds()
	out := map[string]float64{}
	for k, p := range m.pids {
		if p <= 0 {
			continue
		}
		out[k] = round1(100 * (readProc(p).CPU - m.start[k]).Seconds() / el)
	}
	out["client"] = round1(100 * (selfCPU() - m.self0).Seconds() / el)
	return out
}

func (e *env) cpuPIDs() map[string]int {
	m := map[string]int{}
	for i, n := range e.nodes {
		if n.pid > 0 {
			m[fmt.Sprintf("gateway%d", i+1)] = n.pid
		}
	}
	if p := e.redisPID(); p > 0 {
		m["redis"] = p
	}
	return m
}

// profile starts a CPU profile of every own-gateway node for d, in the
// background; wait() waits for the files.
func (e *env) profile(name string, d time.Duration) (wait func()) {
	if e.c.pprofDir == "" {
		return func() {}
	}
	os.MkdirAll(e.c.pprofDir, 0o755)
	if e.c.label != "" {
		name = e.c.label + "-" + name // before/after/bare runs share one directory
	}
	done := make(chan struct{}, len(e.nodes))
	k := 0
	for i, n := range e.nodes {
		if n.pprof == "" {
			continue
		}
		k++
		go func() {
			defer func() { done <- struct{}{} }()
			secs := max(1, int(d.Round(time.Second)/time.Second))
			cl := &http.Client{Timeout: d + 30*time.Second}
			resp, err := cl.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", n.pprof, secs))
			if err != nil {
				fmt.Fprintln(os.Stderr, "pprof:", err)
				return
			}
			defer resp.Body.Close()
			path := filepath.Join(e.c.pprofDir, fmt.Sprintf("%s-node%d.pprof", name, i+1))
			f, err := os.Create(path)
			if err != nil {
				return
			}
			io.Copy(f, resp.Body)
			f.Close()
			fmt.Fprintln(os.Stderr, "cpu profile:", path)
		}()
	}
	return func() {
		for ; k > 0; k-- {
			<-done
		}
	}
}

// forceGC runs a GC in every own-gateway node (pprof's heap?gc=1). It
// reports whether every node has a pprof listener.
func (e *env) forceGC() bool {
	for _, n := range e.nodes {
		if n.pprof == "" {
			return false
		}
	}
	for _, n := range e.nodes {
		cl := &http.Client{Timeout: 30 * time.Second}
		resp, err := cl.Get(fmt.Sprintf("http://%s/debug/pprof/heap?gc=1", n.pprof))
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return true
}

// saveProfiles saves instantaneous profiles (heap, goroutine, …) of every
// own-gateway node into --pprof-dir.
func (e *env) saveProfiles(name string, kinds ...string) {
	if e.c.pprofDir == "" {
		return
	}
	os.MkdirAll(e.c.pprofDir, 0o755)
	if e.c.label != "" {
		name = e.c.label + "-" + name
	}
	for i, n := range e.nodes {
		if n.pprof == "" {
			continue
		}
		for _, k := range kinds {
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s", n.pprof, k))
			if err != nil {
				continue
			}
			path := filepath.Join(e.c.pprofDir, fmt.Sprintf("%s-node%d.%s.pprof", name, i+1, k))
			if f, err := os.Create(path); err == nil {
				io.Copy(f, resp.Body)
				f.Close()
			}
			resp.Body.Close()
		}
	}
}

// ---- machine and results

type machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	MemGiB   int    `json:"memGiB"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Redis    string `json:"redis,omitempty"`
	Commit   string `json:"commit,omitempty"`
	NofileHi uint64 `json:"nofileHard"`
}

func (m machine) String() string {
	return fmt.Sprintf("%s, %d cores, %d GiB, Linux %s, %s, %s, commit %s, open files hard limit %d",
		m.CPU, m.Cores, m.MemGiB, m.Kernel, m.Go, m.Redis, m.Commit, m.NofileHi)
}

func machineInfo() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPU = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(f) >= 2 {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			m.MemGiB = int((kb + 512*1024) / (1024 * 1024))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		f := strings.Fields(string(out))
		for _, x := range f {
			if strings.HasPrefix(x, "v=") {
				m.Redis = "redis " + x[2:]
			}
		}
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.Commit += "+dirty"
		}
	}
	_, m.NofileHi = nofile()
	return m
}

// cpuPressure is the kernel's CPU pressure (PSI): the share of time some
// runnable task waited for a CPU, over the last 10 s and 60 s. On a shared
// 2-core box it says more than the load average about how contended a run
// was.
func cpuPressure() string {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return ""
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	if len(f) >= 3 {
		return strings.Join(f[1:3], " ")
	}
	return ""
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

// result is one measured figure set, one JSON line in --out.
type result struct {
	Scenario string         `json:"scenario"`
	Case     string         `json:"case"`
	Backend  string         `json:"backend"`
	Figures  map[string]any `json:"figures"`
	CPU      map[string]any `json:"cpuPercentOfOneCore,omitempty"`
	LoadAvg  string         `json:"loadavgBefore"`
	LoadEnd  string         `json:"loadavgAfter"`
	PSI      string         `json:"cpuPressureAfter"` // /proc/pressure/cpu "some" avg10/avg60: % of time runnable tasks waited for a CPU
	Command  string         `json:"command"`
	Machine  machine        `json:"machine"`
	Time     string         `json:"time"`
	Label    string         `json:"label,omitempty"`
	// Server is what answered: "presenced" (this checkout), "presenced@<tool
	// path>" (--gateway-tool) or "bare".
	Server string `json:"server,omitempty"`
}

func (c *common) serverLabel() string {
	switch {
	case c.server == "bare":
		return "bare"
	case c.gatewayTool != "":
		return "presenced@" + c.gatewayTool
	case c.gatewayBin != "":
		return c.gatewayBin
	}
	return "presenced"
}

func (c *common) emit(r result) {
	r.Backend = c.backend
	if c.target != "" {
		r.Backend = "target"
	}
	r.Server = c.serverLabel()
	r.Command = "presence-bench " + strings.Join(os.Args[1:], " ")
	r.Machine = machineInfo()
	r.Time = time.Now().UTC().Format(time.RFC3339)
	r.LoadEnd = loadavg()
	r.PSI = cpuPressure()
	r.Label = c.label
	b, _ := json.Marshal(r)
	if c.out == "" {
		fmt.Println(string(b))
	} else {
		f, err := os.OpenFile(c.out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }
func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
}

func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// redisInfo returns the INFO reply for section (one bulk string).
func redisInfo(addr, section string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(respCmd("INFO", section)); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimRight(head, "\r\n"), "$"))
	if err != nil {
		return "", fmt.Errorf("INFO reply %q", head)
	}
	buf := make([]byte, n)
	_, err = io.ReadFull(r, buf)
	return string(buf), err
}

// redisCommandStats is INFO commandstats as command → (calls, usec).
func redisCommandStats(addr string) (map[string][2]float64, error) {
	info, err := redisInfo(addr, "commandstats")
	if err != nil {
		return nil, err
	}
	out := map[string][2]float64{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		var v [2]float64
		for kv := range strings.SplitSeq(rest, ",") {
			k, val, _ := strings.Cut(kv, "=")
			f, _ := strconv.ParseFloat(val, 64)
			switch k {
			case "calls":
				v[0] = f
			case "usec":
				v[1] = f
			}
		}
		out[cmd] = v
	}
	return out, nil
}

// redisAddr is host:port of a redis:// URL (the tool's own redis-server).
func redisAddr(u string) string {
	return strings.TrimSuffix(strings.TrimPrefix(u, "redis://"), "/0")
}
