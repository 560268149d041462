// Package config is the gateway's configuration: one struct, its defaults in
// one place (Default), and the parsing of flags and environment variables
// exactly as the public contract's table names them. A flag wins over its
// environment variable, which wins over the default.
package config

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is everything the gateway needs to run.
type Config struct {
	// Addr is the listen address.
	Addr string
	// RedisURL selects the Redis backend; empty means the in-process store.
	RedisURL string
	// Secret is the HS256 key tokens are signed with.
	Secret []byte
	// Dev enables /login, the demo page and a throwaway secret.
	Dev bool
	// GeneratedSecret is true when Secret was made up because --dev ran
	// without --secret: every token dies with the process.
	GeneratedSecret bool

	// TTL is how long a session lives after its last sign of life.
	TTL time.Duration
	// Heartbeat is the interval clients are told to heartbeat at (< TTL).
	Heartbeat time.Duration
	// TypingTTL is how long a typing mark lives without a refresh.
	TypingTTL time.Duration
	// Keepalive is the longest an SSE stream stays silent (≤ 30 s, well under
	// the 60 s idle cut of common proxies).
	Keepalive time.Duration
	// LeaveGrace is how long after a room stream closes without an explicit
	// offline its session leaves that room, unless a stream of it for that
	// room opened again on the node: a reload that comes straight back (same
	// session id) does not flap leave/join, and a session that lives on
	// (another room's stream, heartbeats) leaves no ghost behind. The
	// session itself is not shortened: it expires TTL after its last sign
	// of life.
	LeaveGrace time.Duration
	// LeaveDebounce delays how the HTML streams show a departure (a member
	// leaving a room's stack, an offline dot): when it is over the current
	// state is shown, so a reload or quick reconnect that comes back within
	// it shows nothing at all. The store and the JSON streams are not
	// delayed. 0 turns it off; it must be shorter than TTL.
	LeaveDebounce time.Duration
	// AllowOrigins are the other origins (scheme://host[:port]) that may embed
	// the widget, call the API cross-origin and send cookie-authenticated
	// state changes. "*" allows any origin for CORS reads (never for cookie
	// state changes).
	AllowOrigins []string

	// WriteDeadline bounds each write to an SSE stream: a reader that does
	// not take a write within it is dropped (it reconnects and gets the
	// state first). There is deliberately no server-wide WriteTimeout: it
	// would cut every stream after that time.
	WriteDeadline time.Duration
	// Coalesce is the shortest interval between two renders of one room: a
	// burst of changes (a reconnect storm) is rendered once per window.
	Coalesce time.Duration
	// ReadTimeout bounds reading a request (headers and body), against slow
	// clients holding connections. It does not limit a stream: net/http
	// lifts the read deadline once a body-less request has been read
	// (TestStreamOutlivesReadTimeout guards that).
	ReadTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration

	// RateLimit turns the per-session rate limits on (heartbeats, status
	// changes, room joins and leaves, typing marks; 429 with Retry-After).
	// Off only for load tests.
	RateLimit bool
	// MetricsToken, when set, is the bearer token /metrics requires.
	MetricsToken string
	// LogLevel is the lowest level logged: debug, info (the default), warn
	// or error.
	LogLevel slog.Level
	// MetricsAddr, when set, is a separate listen address that alone serves
	// /metrics (the main address then does not).
	MetricsAddr string
	// TLSCert and TLSKey are PEM files: when both are set the gateway
	// serves HTTPS (HTTP/2 and HTTP/1.1) itself, and re-reads them on
	// SIGHUP and whenever their contents change. Browsers speak HTTP/2 only
	// over TLS, and without it they allow six connections per origin.
	TLSCert, TLSKey string
	// PublicURL is the origin (scheme://host[:port]) browsers reach this
	// gateway at. When set, every absolute URL the gateway writes and every
	// same-origin check uses it, never the Host header. Production should
	// set it; empty keeps deriving the origin from the request (Host, and
	// X-Forwarded-Proto/Host from TrustedProxies only).
	PublicURL string
	// BasePath is the path prefix the gateway's handler is mounted under
	// when it is embedded in another app (the gateway package), e.g.
	// "/presence": every URL the gateway writes gets it. Empty for the
	// binary, which serves at the root.
	BasePath string
	// TrustedProxies are the peers whose X-Forwarded-For/Proto/Host headers
	// are believed; from anyone else those headers are ignored.
	TrustedProxies []netip.Prefix

	// WebhookURLs receive presence webhooks (POST, JSON batches); empty =
	// no webhooks. WebhookSecret signs them (required with a URL).
	WebhookURLs   []string
	WebhookSecret []byte
	// WebhookRetryFor bounds how long one batch is retried.
	WebhookRetryFor time.Duration
}

// Default returns the contract's defaults. Secret is empty: it must be given
// (or Dev set).
func Default() Config {
	return Config{
		Addr:            ":8080",
		TTL:             60 * time.Second,
		Heartbeat:       30 * time.Second,
		TypingTTL:       5 * time.Second,
		Keepalive:       15 * time.Second,
		LeaveGrace:      5 * time.Second,
		LeaveDebounce:   2 * time.Second,
		WriteDeadline:   10 * time.Second,
		Coalesce:        50 * time.Millisecond,
		ReadTimeout:     30 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		RateLimit:       true,
		WebhookRetryFor: 24 * time.Hour,
	}
}

// Sentinel errors of Validate.
var (
	ErrNoSecret     = errors.New("refusing to start: no --secret (PRESENCE_SECRET) given; tokens must be signed with a secret you keep. For a local demo run with --dev (a throwaway secret)")
	ErrHeartbeatTTL = errors.New("--heartbeat must be shorter than --ttl (a session would expire between two heartbeats)")
	ErrKeepalive    = errors.New("--keepalive must be between 1s and 30s (proxies cut streams idle for 30-60 s)")
	ErrDuration     = errors.New("durations must be positive")
	ErrOrigin       = errors.New("--allow-origin entries must be scheme://host[:port] origins or *")
	ErrDebounce     = errors.New("--leave-debounce must be 0 (off) or positive")
	ErrMetricsToken = errors.New("--metrics-token must be at least 16 characters of printable ASCII without spaces")
	ErrWebhook      = errors.New("--webhook-url must be absolute http:// or https:// URLs, and needs --webhook-secret (PRESENCE_WEBHOOK_SECRET) of at least 16 bytes")
	ErrMetricsAddr  = errors.New("--metrics-addr must be host:port (e.g. 127.0.0.1:9090) and differ from --addr")
	ErrShortSecret  = fmt.Errorf("--secret (PRESENCE_SECRET) must be at least %d bytes: anyone who guesses it can sign tokens for any user (generate one with: openssl rand -base64 48)", MinSecretLen)
	ErrTLS          = errors.New("--tls-cert and --tls-key must be given together")
	ErrPublicURL    = errors.New("--public-url must be an origin: scheme://host[:port], no path")
	ErrProxies      = errors.New("--trusted-proxies must be comma-separated CIDRs or IP addresses (e.g. 10.0.0.0/8,127.0.0.1)")
	// ErrVersion is returned by Parse for --version, like flag.ErrHelp for
	// --help: the caller prints the version and exits 0.
	ErrVersion = errors.New("version requested")
)

// MinMetricsToken is the shortest --metrics-token accepted.
const MinMetricsToken = 16

// MinSecretLen is the shortest --secret accepted: 32 bytes, the size of
// the HS256 hash, so the key is not the weak part of a token.
const MinSecretLen = 32

// ErrBasePath: BasePath must be empty or "/segment[/segment…]" with no
// trailing slash.
var ErrBasePath = errors.New("base path must be empty or start with / and not end with /")

// Validate checks the invariants the gateway relies on.
func (c Config) Validate() error {
	if c.BasePath != "" && (!strings.HasPrefix(c.BasePath, "/") || strings.HasSuffix(c.BasePath, "/") || strings.ContainsAny(c.BasePath, "?#\\ ")) {
		return fmt.Errorf("%w: %q", ErrBasePath, c.BasePath)
	}
	if len(c.Secret) == 0 && !c.Dev {
		return ErrNoSecret
	}
	if len(c.Secret) > 0 && len(c.Secret) < MinSecretLen {
		return fmt.Errorf("%w; got %d", ErrShortSecret, len(c.Secret))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return ErrTLS
	}
	if c.PublicURL != "" {
		if n, err := NormalizeOrigin(c.PublicURL); err != nil || n != c.PublicURL {
			return fmt.Errorf("%w: %q", ErrPublicURL, c.PublicURL)
		}
	}
	for _, d := range []time.Duration{c.TTL, c.Heartbeat, c.TypingTTL, c.Keepalive, c.LeaveGrace, c.WriteDeadline} {
		if d <= 0 {
			return ErrDuration
		}
	}
	if c.Heartbeat >= c.TTL {
		return fmt.Errorf("%w: heartbeat %s, ttl %s", ErrHeartbeatTTL, c.Heartbeat, c.TTL)
	}
	if c.LeaveDebounce < 0 {
		return fmt.Errorf("%w: leave debounce %s", ErrDebounce, c.LeaveDebounce)
	}
	if c.Keepalive > 30*time.Second {
		return fmt.Errorf("%w: got %s", ErrKeepalive, c.Keepalive)
	}
	if c.MetricsToken != "" {
		if len(c.MetricsToken) < MinMetricsToken || strings.ContainsFunc(c.MetricsToken, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return ErrMetricsToken
		}
	}
	if c.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddr)
		if err != nil || (c.MetricsAddr == c.Addr && port != "0") {
			return fmt.Errorf("%w: got %q", ErrMetricsAddr, c.MetricsAddr)
		}
	}
	if len(c.WebhookURLs) > 0 && len(c.WebhookSecret) < 16 {
		return fmt.Errorf("%w: the secret is missing or too short", ErrWebhook)
	}
	for _, raw := range c.WebhookURLs {
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: got %q", ErrWebhook, raw)
		}
	}
	if c.WebhookRetryFor <= 0 {
		return fmt.Errorf("%w: --webhook-retry-for %s", ErrDuration, c.WebhookRetryFor)
	}
	for _, o := range c.AllowOrigins {
		if o == "*" {
			continue
		}
		if _, err := NormalizeOrigin(o); err != nil {
			return fmt.Errorf("%w: %q", ErrOrigin, o)
		}
	}
	return nil
}

// RefreshInterval is how often an open stream refreshes its session:
// min(heartbeat, ttl/3), so that two refreshes can be missed before the
// session expires.
func (c Config) RefreshInterval() time.Duration {
	r := c.TTL / 3
	if c.Heartbeat < r {
		r = c.Heartbeat
	}
	return r
}

// Parse reads flags (args, without the program name) and environment
// variables (getenv, normally os.Getenv), then validates. With --dev and no
// secret it generates a random one and sets GeneratedSecret.
func Parse(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet("presenced", flag.ContinueOnError)
	fs.SetOutput(stderr)

	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var errs []error
	envDur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return def
		}
		return d
	}
	envBool := func(name string, def bool) bool {
		v := getenv(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return def
		}
		return b
	}

	var secret, origins, proxies, whSecret, logLevel string
	var version bool
	var whURLs urlList
	whURLs.add(env("PRESENCE_WEBHOOK_URL", ""))
	whURLs.fromEnv = len(whURLs.urls) > 0
	fs.StringVar(&c.Addr, "addr", env("PRESENCE_ADDR", c.Addr), "listen address (PRESENCE_ADDR)")
	fs.StringVar(&c.RedisURL, "redis-url", env("PRESENCE_REDIS_URL", ""), "redis://…, rediss://…, redis+sentinel://sentinel:26379,…/mastername[/db] or redis+cluster://node:6379?addr=node2:6379… URL; empty = the embedded in-process store (PRESENCE_REDIS_URL)")
	fs.StringVar(&secret, "secret", env("PRESENCE_SECRET", ""), "HMAC key for HS256 tokens; required unless --dev (PRESENCE_SECRET)")
	fs.BoolVar(&c.Dev, "dev", envBool("PRESENCE_DEV", false), "demo sign-in at /login, a throwaway secret (PRESENCE_DEV)")
	fs.DurationVar(&c.TTL, "ttl", envDur("PRESENCE_TTL", c.TTL), "session lifetime after its last sign of life (PRESENCE_TTL)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", envDur("PRESENCE_HEARTBEAT", c.Heartbeat), "heartbeat interval clients are told to use; < ttl (PRESENCE_HEARTBEAT)")
	fs.DurationVar(&c.TypingTTL, "typing-ttl", envDur("PRESENCE_TYPING_TTL", c.TypingTTL), "typing mark lifetime without refresh (PRESENCE_TYPING_TTL)")
	fs.DurationVar(&c.Keepalive, "keepalive", envDur("PRESENCE_KEEPALIVE", c.Keepalive), "SSE comment interval on idle streams, ≤ 30s (PRESENCE_KEEPALIVE)")
	fs.DurationVar(&c.LeaveGrace, "leave-grace", envDur("PRESENCE_LEAVE_GRACE", c.LeaveGrace), "a session whose room stream closed without an explicit offline leaves that room this long after, unless a stream of it reopens the room here; the session itself still lives until --ttl after its last sign of life (PRESENCE_LEAVE_GRACE)")
	fs.DurationVar(&c.LeaveDebounce, "leave-debounce", envDur("PRESENCE_LEAVE_DEBOUNCE", c.LeaveDebounce), "HTML streams show a departure (leaving the stack, offline dot) only if it still holds this long after; 0 = off (PRESENCE_LEAVE_DEBOUNCE)")
	fs.StringVar(&origins, "allow-origin", env("PRESENCE_ALLOW_ORIGIN", ""), "comma-separated origins allowed to embed and call cross-origin (PRESENCE_ALLOW_ORIGIN)")
	fs.BoolVar(&c.RateLimit, "rate-limit", envBool("PRESENCE_RATE_LIMIT", c.RateLimit), "per-session rate limits on heartbeats, status changes, room joins/leaves and typing (429 + Retry-After); turn off only for load tests (PRESENCE_RATE_LIMIT)")
	fs.StringVar(&logLevel, "log-level", env("PRESENCE_LOG_LEVEL", "info"), "lowest level logged: debug, info, warn or error (PRESENCE_LOG_LEVEL)")
	fs.StringVar(&c.MetricsToken, "metrics-token", env("PRESENCE_METRICS_TOKEN", ""), "when set, /metrics requires Authorization: Bearer <this> (PRESENCE_METRICS_TOKEN)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env("PRESENCE_METRICS_ADDR", ""), "when set, /metrics is served only on this separate address, e.g. 127.0.0.1:9090 (PRESENCE_METRICS_ADDR)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("PRESENCE_TLS_CERT", ""), "PEM certificate (chain) file: serve HTTPS and HTTP/2; reloaded on SIGHUP and when it changes (PRESENCE_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("PRESENCE_TLS_KEY", ""), "PEM private key file for --tls-cert (PRESENCE_TLS_KEY)")
	fs.StringVar(&c.PublicURL, "public-url", env("PRESENCE_PUBLIC_URL", ""), "origin browsers reach the gateway at, e.g. https://presence.example.com: every absolute URL and same-origin check uses it, never the Host header; set it in production (PRESENCE_PUBLIC_URL)")
	fs.StringVar(&proxies, "trusted-proxies", env("PRESENCE_TRUSTED_PROXIES", ""), "comma-separated CIDRs whose X-Forwarded-For/Proto/Host are believed; ignored from anyone else (PRESENCE_TRUSTED_PROXIES)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", envDur("PRESENCE_SHUTDOWN_TIMEOUT", c.ShutdownTimeout), "on SIGTERM, how long to wait for open requests before cutting them; keep it under the orchestrator's grace period (PRESENCE_SHUTDOWN_TIMEOUT)")
	fs.BoolVar(&version, "version", false, "print the version and exit")
	fs.Var(&whURLs, "webhook-url", "POST presence webhooks to this URL; repeat or comma-separate for several (PRESENCE_WEBHOOK_URL, comma-separated)")
	fs.StringVar(&whSecret, "webhook-secret", env("PRESENCE_WEBHOOK_SECRET", ""), "HMAC-SHA256 key webhooks are signed with (Presenced-Signature header); required with --webhook-url (PRESENCE_WEBHOOK_SECRET)")
	fs.DurationVar(&c.WebhookRetryFor, "webhook-retry-for", envDur("PRESENCE_WEBHOOK_RETRY_FOR", c.WebhookRetryFor), "retry a failing webhook batch with exponential backoff for this long, then drop it (PRESENCE_WEBHOOK_RETRY_FOR)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if version {
		return c, ErrVersion
	}
	if c.ShutdownTimeout <= 0 {
		return c, fmt.Errorf("%w: --shutdown-timeout %s", ErrDuration, c.ShutdownTimeout)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	c.Secret = []byte(secret)
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return c, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
	}
	var err error
	c.WebhookURLs, c.WebhookSecret = whURLs.urls, []byte(whSecret)
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if o != "*" {
			n, err := NormalizeOrigin(o)
			if err != nil {
				return c, fmt.Errorf("%w: %q", ErrOrigin, o)
			}
			o = n
		}
		c.AllowOrigins = append(c.AllowOrigins, o)
	}
	if c.PublicURL != "" {
		n, err := NormalizeOrigin(c.PublicURL)
		if err != nil {
			return c, fmt.Errorf("%w: %q", ErrPublicURL, c.PublicURL)
		}
		c.PublicURL = n
	}
	if c.TrustedProxies, err = ParsePrefixes(proxies); err != nil {
		return c, err
	}
	if len(c.Secret) == 0 && c.Dev {
		c.Secret = make([]byte, 32)
		_, _ = rand.Read(c.Secret)
		c.GeneratedSecret = true
	}
	return c, c.Validate()
}

// NormalizeOrigin turns "HTTPS://Example.com:443/" into "https://example.com"
// so that origins compare as strings.
func NormalizeOrigin(o string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(o))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return "", ErrOrigin
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Host)
	if (scheme == "http" && strings.HasSuffix(host, ":80")) || (scheme == "https" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	return scheme + "://" + host, nil
}

// ParsePrefixes reads a comma-separated list of CIDRs; a bare address is
// a one-address prefix.
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !strings.Contains(p, "/") {
			a, err := netip.ParseAddr(p)
			if err != nil {
				return nil, fmt.Errorf("%w: %q", ErrProxies, p)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		pr, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", ErrProxies, p)
		}
		out = append(out, pr.Masked())
	}
	return out, nil
}

// urlList is a repeatable, comma-splitting flag; flags given on the command
// line replace the environment's list.
type urlList struct {
	urls    []string
	fromEnv bool
}

func (l *urlList) String() string { return strings.Join(l.urls, ",") }

func (l *urlList) Set(v string) error {
	if l.fromEnv {
		l.urls, l.fromEnv = nil, false
	}
	l.add(v)
	return nil
}

func (l *urlList) add(v string) {
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			l.urls = append(l.urls, u)
		}
	}
}
