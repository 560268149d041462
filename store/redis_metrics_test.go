package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/store/redistest"
)

const noScript = "0000000000000000000000000000000000000000"

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// series lists the series a collector has ("label=value" each).
func series(t *testing.T, c prometheus.Collector) []string {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var out []string
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=%v", d.GetLabel()[0].GetValue(), d.GetCounter().GetValue()))
	}
	return out
}

// Failed commands are counted by command; a missing key is not a failure.
func TestRedisErrorCounts(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, srv, quick())
	count := func(cmd string) float64 { return value(t, s.errs.errs.WithLabelValues(cmd)) }
	// Every expected series exists from the start, at 0 (NewRedis's own
	// commands all succeeded).
	if got := series(t, s.Collector()); len(got) != len(redisErrorCommands) {
		t.Fatalf("series at start %v, want one per command of %v", got, redisErrorCommands)
	}
	for _, c := range redisErrorCommands {
		if v := count(c); v != 0 {
			t.Fatalf("%s errors at start: %v", c, v)
		}
	}
	ctx := context.Background()
	if err := s.client.Get(ctx, "no-such-key").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET of a missing key: %v", err)
	}
	if err := s.client.Do(ctx, "EVALSHA", noScript, 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOSCRIPT") {
		t.Fatalf("EVALSHA of an unknown script: %v", err)
	}
	p := s.client.Pipeline()
	p.Do(ctx, "EVALSHA", noScript, 0)
	p.Get(ctx, "no-such-key")
	_, _ = p.Exec(ctx)
	if got := count("evalsha"); got != 2 {
		t.Fatalf("evalsha errors %v, want 2 (one alone, one in a pipeline)", got)
	}
	if got := count("get"); got != 0 {
		t.Fatalf("a missing key counted as %v errors", got)
	}
	// A real heartbeat through the store's scripts adds nothing.
	if err := s.Heartbeat(ctx, Heartbeat{User: Profile{ID: "alice"}, SessionID: "alice-tab-1", Status: StatusOnline}); err != nil {
		t.Fatal(err)
	}
	if got := count("evalsha") + count("eval"); got != 2 {
		t.Fatalf("script errors %v after a good heartbeat, want still 2", got)
	}
}

// A server that is not there: dial and command errors.
func TestRedisErrorHookDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	h := newRedisErrors()
	c.AddHook(h)
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("PING to a closed port succeeded")
	}
	if d, p := value(t, h.errs.WithLabelValues("dial")), value(t, h.errs.WithLabelValues("ping")); d < 1 || p != 1 {
		t.Fatalf("dial errors %v, ping errors %v: want ≥ 1 and 1", d, p)
	}
	// A caller that gave up is not a Redis error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := value(t, h.errs.WithLabelValues("ping"))
	_ = c.Ping(ctx).Err()
	if after := value(t, h.errs.WithLabelValues("ping")); after != before {
		t.Fatalf("a cancelled PING was counted (%v → %v)", before, after)
	}
}

// rediss://: the whole store over TLS to a real redis-server, the server's
// certificate verified against a private CA given the standard way
// (SSL_CERT_FILE, read by Go on first use of the system roots).
func TestRedisOverTLS(t *testing.T) {
	srv := redistest.StartTLS(t)
	t.Setenv("SSL_CERT_FILE", srv.CAFile)
	runConformance(t, func(t *testing.T, opts Options) Store {
		if opts.KeyPrefix == "" {
			opts.KeyPrefix = redistest.Prefix(t)
		}
		s, err := NewRedis(context.Background(), srv.TLSURL, opts, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("NewRedis(%s): %v (if this is a certificate error, another test loaded the system roots before SSL_CERT_FILE was set)", srv.TLSURL, err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
	// The certificate names 127.0.0.1 only: by another name it is refused.
	port := srv.TLSAddr[strings.LastIndexByte(srv.TLSAddr, ':')+1:]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s, err := NewRedis(ctx, fmt.Sprintf("rediss://localhost:%s/0", port), quick(), slog.New(slog.DiscardHandler)); err == nil {
		_ = s.Close()
		t.Fatal("a certificate for 127.0.0.1 was accepted for localhost")
	}
}
