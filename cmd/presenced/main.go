// Command presenced is the presence gateway. Configuration comes from flags
// and PRESENCE_* environment variables (see internal/config and the
// contract); an empty --redis-url runs the embedded in-process store.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/presenced/presenced/handlers"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// stdout is where --version prints (a variable for tests).
var stdout io.Writer = os.Stdout

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := config.Parse(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, config.ErrVersion) {
		fmt.Fprintln(stdout, version())
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "presenced:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		log.Error("cannot open the presence store", "err", err)
		return 1
	}
	srv, err := handlers.New(cfg, st, log)
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		log.Error("cannot start", "err", err)
		_ = st.Close()
		return 1
	}

	// SIGHUP re-reads the TLS certificate and key (they are also re-read
	// when the files change); a bad pair is logged and the old one kept.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	code := 0
wait:
	for {
		select {
		case <-hup:
			if cfg.TLSCert == "" {
				log.Info("SIGHUP: nothing to reload (no --tls-cert)")
				continue
			}
			if err := srv.ReloadTLS(); err != nil {
				log.Error("SIGHUP: TLS certificate not reloaded, keeping the previous one", "err", err)
			} else {
				log.Info("SIGHUP: TLS certificate reloaded")
			}
		case <-ctx.Done():
			log.Info("signal received: closing streams (clients reconnect elsewhere), sessions stay")
			break wait
		case err := <-srv.Done():
			if err != nil {
				log.Error("server stopped", "err", err)
				code = 1
			}
			break wait
		}
	}
	stop() // a second signal kills at once

	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown did not finish cleanly", "err", err)
	}
	if err := st.Close(); err != nil {
		log.Warn("store close", "err", err)
	}
	log.Info("stopped")
	return code
}

// openStore picks the backend: the embedded store for one node, Redis to
// share presence between nodes.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (store.Store, error) {
	opts := store.Options{TTL: cfg.TTL, TypingTTL: cfg.TypingTTL}
	if cfg.RedisURL == "" {
		log.Info("using the embedded in-process store (one node)")
		return store.NewMemory(opts), nil
	}
	return store.OpenRedis(ctx, cfg.RedisURL, opts, log)
}

// revision may be set at link time (-ldflags "-X main.revision=…") where
// the toolchain cannot stamp it itself (a container build without .git).
var revision string

// version is the module version and VCS revision the binary was built
// from, as the Go toolchain recorded them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "presenced (no build information)"
	}
	return formatVersion(bi, revision)
}

func formatVersion(bi *debug.BuildInfo, linked string) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	rev, at, dirty := linked, "", ""
	for _, st := range bi.Settings {
		switch st.Key {
		case "vcs.revision":
			rev = st.Value
		case "vcs.time":
			at = st.Value
		case "vcs.modified":
			if st.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "presenced %s", v)
	if rev != "" {
		fmt.Fprintf(&b, " revision %s%s", rev, dirty)
	}
	if at != "" {
		fmt.Fprintf(&b, " (%s)", at)
	}
	fmt.Fprintf(&b, " %s", bi.GoVersion)
	return b.String()
}
