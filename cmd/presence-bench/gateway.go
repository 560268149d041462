package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/presenced/presenced/handlers"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// gatewayMain runs one gateway node exactly as cmd/presenced does (the same
// config parsing, store, handlers.New, Start/Shutdown), plus two bench
// knobs the product binary does not have: a pprof listener on loopback and
// the store's SweepInterval (to show what the Redis sweeper is for).
//
//	presence-bench gateway --pprof 127.0.0.1:6060 --sweep-interval 1h -- --secret s --redis-url redis://…
func gatewayMain(args []string) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback address")
	sweep := fs.Duration("sweep-interval", 0, "store.Options.SweepInterval (redis backend); 0 = the store's default, 1h = practically off")
	level := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(*level))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	cfg, err := config.Parse(fs.Args(), os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "presence-bench gateway:", err)
		return 2
	}
	if *pprofAddr != "" {
		if err := checkLoopback(*pprofAddr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		go func() { _ = http.ListenAndServe(*pprofAddr, mux) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	opts := store.Options{TTL: cfg.TTL, TypingTTL: cfg.TypingTTL, SweepInterval: *sweep}
	var st store.Store
	if cfg.RedisURL == "" {
		st = store.NewMemory(opts)
	} else {
		st, err = store.OpenRedis(ctx, cfg.RedisURL, opts, log)
		if err != nil {
			log.Error("cannot open the presence store", "err", err)
			return 1
		}
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
	code := 0
	select {
	case <-ctx.Done():
	case err := <-srv.Done():
		if err != nil {
			log.Error("server stopped", "err", err)
			code = 1
		}
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = st.Close()
	return code
}
