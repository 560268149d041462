package config

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// sec is a secret of the minimum length.
const sec = "0123456789abcdef0123456789abcdef"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaultsAndSecretRequired(t *testing.T) {
	_, err := Parse(nil, env(nil), io.Discard)
	if !errors.Is(err, ErrNoSecret) {
		t.Fatalf("no secret, no dev: %v", err)
	}
	if !strings.Contains(err.Error(), "--secret") || !strings.Contains(err.Error(), "--dev") {
		t.Fatalf("message is not clear: %v", err)
	}
	c, err := Parse([]string{"--secret", sec}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Addr != ":8080" || c.TTL != d.TTL || c.Heartbeat != 30*time.Second || c.TypingTTL != 5*time.Second ||
		c.Keepalive != 15*time.Second || c.LeaveGrace != 5*time.Second || c.LeaveDebounce != 2*time.Second || c.RedisURL != "" || c.Dev {
		t.Fatalf("defaults: %+v", c)
	}
	if c.RefreshInterval() != 20*time.Second {
		t.Fatalf("refresh interval %s, want min(30s, 60s/3)", c.RefreshInterval())
	}
}

func TestDevGeneratesSecret(t *testing.T) {
	c, err := Parse([]string{"--dev"}, env(nil), io.Discard)
	if err != nil || len(c.Secret) < 32 || !c.GeneratedSecret {
		t.Fatalf("dev: %+v %v", c, err)
	}
	c2, _ := Parse([]string{"--dev"}, env(nil), io.Discard)
	if string(c.Secret) == string(c2.Secret) {
		t.Fatal("the throwaway secret is not random")
	}
}

func TestEnvAndFlagPrecedence(t *testing.T) {
	e := env(map[string]string{
		"PRESENCE_ADDR": ":9000", "PRESENCE_SECRET": "from-env-from-env-from-env-from-env", "PRESENCE_TTL": "90s", "PRESENCE_HEARTBEAT": "20s",
		"PRESENCE_TYPING_TTL": "4s", "PRESENCE_KEEPALIVE": "10s", "PRESENCE_DEV": "true", "PRESENCE_REDIS_URL": "redis://r:6379/0",
		"PRESENCE_ALLOW_ORIGIN": "https://A.example:443, http://b.example:8080", "PRESENCE_LEAVE_GRACE": "3s",
		"PRESENCE_LEAVE_DEBOUNCE": "1500ms",
	})
	c, err := Parse([]string{"--addr", ":9100", "--ttl", "120s"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":9100" || c.TTL != 120*time.Second || c.Heartbeat != 20*time.Second || string(c.Secret) != "from-env-from-env-from-env-from-env" ||
		c.TypingTTL != 4*time.Second || c.Keepalive != 10*time.Second || !c.Dev || c.RedisURL != "redis://r:6379/0" ||
		c.LeaveGrace != 3*time.Second || c.LeaveDebounce != 1500*time.Millisecond || c.GeneratedSecret {
		t.Fatalf("parsed %+v", c)
	}
	if len(c.AllowOrigins) != 2 || c.AllowOrigins[0] != "https://a.example" || c.AllowOrigins[1] != "http://b.example:8080" {
		t.Fatalf("origins %q", c.AllowOrigins)
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want error
	}{
		{[]string{"--secret", sec, "--heartbeat", "60s", "--ttl", "60s"}, ErrHeartbeatTTL},
		{[]string{"--secret", sec, "--keepalive", "31s"}, ErrKeepalive},
		{[]string{"--secret", sec, "--ttl", "0s"}, ErrDuration},
		{[]string{"--secret", sec, "--leave-debounce", "-1s"}, ErrDebounce},
		{[]string{"--secret", sec, "--allow-origin", "not a url"}, ErrOrigin},
		{[]string{"--secret", sec, "--allow-origin", "https://a.example/path"}, ErrOrigin},
	} {
		if _, err := Parse(tc.args, env(nil), io.Discard); !errors.Is(err, tc.want) {
			t.Errorf("%v: %v, want %v", tc.args, err, tc.want)
		}
	}
	if _, err := Parse(nil, env(map[string]string{"PRESENCE_SECRET": sec, "PRESENCE_TTL": "soon"}), io.Discard); err == nil {
		t.Error("a bad duration in the environment was accepted")
	}
	for _, off := range [][]string{{"--leave-debounce", "0"}, {"--leave-debounce=0s"}} {
		c, err := Parse(append([]string{"--secret", sec}, off...), env(nil), io.Discard)
		if err != nil || c.LeaveDebounce != 0 {
			t.Errorf("%v: %v, debounce %s: want accepted and off", off, err, c.LeaveDebounce)
		}
	}
	c, err := Parse([]string{"--leave-debounce", "250ms"}, env(map[string]string{"PRESENCE_SECRET": sec, "PRESENCE_LEAVE_DEBOUNCE": "0"}), io.Discard)
	if err != nil || c.LeaveDebounce != 250*time.Millisecond {
		t.Errorf("flag over env: %v, debounce %s", err, c.LeaveDebounce)
	}
	if _, err := Parse([]string{"--secret", sec, "extra"}, env(nil), io.Discard); err == nil {
		t.Error("stray arguments accepted")
	}
}

func TestSecretMinimumLength(t *testing.T) {
	_, err := Parse([]string{"--secret", sec[:31]}, env(nil), io.Discard)
	if !errors.Is(err, ErrShortSecret) || !strings.Contains(err.Error(), "32 bytes") || !strings.Contains(err.Error(), "got 31") {
		t.Fatalf("31-byte secret: %v", err)
	}
	// A short secret is refused in dev mode too: it is a real secret then.
	if _, err := Parse([]string{"--dev", "--secret", "x"}, env(nil), io.Discard); !errors.Is(err, ErrShortSecret) {
		t.Fatalf("1-byte secret with --dev: %v", err)
	}
	if _, err := Parse(nil, env(map[string]string{"PRESENCE_SECRET": "short"}), io.Discard); !errors.Is(err, ErrShortSecret) {
		t.Fatalf("short PRESENCE_SECRET: %v", err)
	}
	if _, err := Parse([]string{"--secret", sec}, env(nil), io.Discard); err != nil {
		t.Fatalf("32-byte secret: %v", err)
	}
}

func TestVersionFlag(t *testing.T) {
	// --version needs no secret: it never starts anything.
	if _, err := Parse([]string{"--version"}, env(nil), io.Discard); !errors.Is(err, ErrVersion) {
		t.Fatalf("--version: %v", err)
	}
}

func TestProductionFlags(t *testing.T) {
	c, err := Parse([]string{"--secret", sec, "--tls-cert", "c.pem", "--tls-key", "k.pem",
		"--public-url", "HTTPS://Presence.Example.com:443/", "--trusted-proxies", "10.0.0.0/8, 127.0.0.1,::1", "--shutdown-timeout", "25s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLSCert != "c.pem" || c.TLSKey != "k.pem" || c.PublicURL != "https://presence.example.com" || c.ShutdownTimeout != 25*time.Second {
		t.Fatalf("parsed %+v", c)
	}
	want := []string{"10.0.0.0/8", "127.0.0.1/32", "::1/128"}
	if len(c.TrustedProxies) != len(want) {
		t.Fatalf("proxies %v", c.TrustedProxies)
	}
	for i, p := range c.TrustedProxies {
		if p.String() != want[i] {
			t.Fatalf("proxies %v, want %v", c.TrustedProxies, want)
		}
	}
	e := env(map[string]string{"PRESENCE_SECRET": sec, "PRESENCE_TLS_CERT": "a", "PRESENCE_TLS_KEY": "b",
		"PRESENCE_PUBLIC_URL": "http://localhost:8080", "PRESENCE_TRUSTED_PROXIES": "192.168.0.0/16"})
	if c, err = Parse(nil, e, io.Discard); err != nil || c.TLSCert != "a" || c.TLSKey != "b" ||
		c.PublicURL != "http://localhost:8080" || len(c.TrustedProxies) != 1 {
		t.Fatalf("from env: %+v %v", c, err)
	}
	for _, tc := range []struct {
		args []string
		want error
	}{
		{[]string{"--tls-cert", "c.pem"}, ErrTLS},
		{[]string{"--tls-key", "k.pem"}, ErrTLS},
		{[]string{"--public-url", "https://a.example/presence"}, ErrPublicURL},
		{[]string{"--public-url", "presence.example.com"}, ErrPublicURL},
		{[]string{"--public-url", "ftp://a.example"}, ErrPublicURL},
		{[]string{"--trusted-proxies", "10.0.0.0/33"}, ErrProxies},
		{[]string{"--trusted-proxies", "nginx"}, ErrProxies},
		{[]string{"--shutdown-timeout", "0s"}, ErrDuration},
	} {
		if _, err := Parse(append([]string{"--secret", sec}, tc.args...), env(nil), io.Discard); !errors.Is(err, tc.want) {
			t.Errorf("%v: %v, want %v", tc.args, err, tc.want)
		}
	}
}

// --metrics-token, --metrics-addr and --rate-limit: defaults, environment,
// flags and validation.
func TestMetricsAndRateLimitFlags(t *testing.T) {
	c, err := Parse([]string{"--secret", sec}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsToken != "" || c.MetricsAddr != "" || !c.RateLimit {
		t.Fatalf("defaults: token %q, addr %q, rate limit %v; want open /metrics on the main address, limits on", c.MetricsToken, c.MetricsAddr, c.RateLimit)
	}
	e := env(map[string]string{"PRESENCE_SECRET": sec, "PRESENCE_METRICS_TOKEN": "0123456789abcdef-env",
		"PRESENCE_METRICS_ADDR": "127.0.0.1:9090", "PRESENCE_RATE_LIMIT": "false"})
	c, err = Parse(nil, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsToken != "0123456789abcdef-env" || c.MetricsAddr != "127.0.0.1:9090" || c.RateLimit {
		t.Fatalf("from the environment: %+v", c)
	}
	c, err = Parse([]string{"--metrics-token", "0123456789abcdef-flag", "--metrics-addr", ":9191", "--rate-limit=true"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsToken != "0123456789abcdef-flag" || c.MetricsAddr != ":9191" || !c.RateLimit {
		t.Fatalf("flags over the environment: %+v", c)
	}
	for _, tc := range []struct {
		args []string
		want error
	}{
		{[]string{"--secret", sec, "--metrics-token", "short"}, ErrMetricsToken},
		{[]string{"--secret", sec, "--metrics-token", "0123456789 abcdef"}, ErrMetricsToken},
		{[]string{"--secret", sec, "--metrics-addr", "9090"}, ErrMetricsAddr},
		{[]string{"--secret", sec, "--addr", ":9090", "--metrics-addr", ":9090"}, ErrMetricsAddr},
	} {
		if _, err := Parse(tc.args, env(nil), io.Discard); !errors.Is(err, tc.want) {
			t.Errorf("%v: %v, want %v", tc.args, err, tc.want)
		}
	}
}

// --log-level: info by default, the environment, the flag, and a clear
// error for a level slog does not know.
func TestLogLevel(t *testing.T) {
	c, err := Parse([]string{"--secret", sec}, env(nil), io.Discard)
	if err != nil || c.LogLevel != slog.LevelInfo {
		t.Fatalf("default: %v %v, want info", c.LogLevel, err)
	}
	warn := env(map[string]string{"PRESENCE_LOG_LEVEL": "warn"})
	if c, err = Parse([]string{"--secret", sec}, warn, io.Discard); err != nil || c.LogLevel != slog.LevelWarn {
		t.Fatalf("env: %v %v, want warn", c.LogLevel, err)
	}
	if c, err = Parse([]string{"--secret", sec, "--log-level", "DEBUG"}, warn, io.Discard); err != nil || c.LogLevel != slog.LevelDebug {
		t.Fatalf("flag: %v %v, want debug", c.LogLevel, err)
	}
	if _, err = Parse([]string{"--secret", sec, "--log-level", "loud"}, warn, io.Discard); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("bad level: %v, want an error naming --log-level", err)
	}
}
