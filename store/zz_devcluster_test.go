package store

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/presenced/presenced/store/redistest"
)

func TestDevClusterConformance(t *testing.T) {
	url := os.Getenv("DEV_CLUSTER_URL")
	if url == "" {
		t.Skip()
	}
	runConformance(t, func(t *testing.T, opts Options) Store {
		if opts.KeyPrefix == "" {
			opts.KeyPrefix = redistest.Prefix(t)
		}
		s, err := NewCluster(context.Background(), url, opts, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
