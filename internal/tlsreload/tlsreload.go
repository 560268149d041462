// Package tlsreload serves a TLS certificate that can be replaced while the
// server runs: on demand (SIGHUP) and when the files' contents change
// (polled, so that it also follows renames, symlink swaps such as a
// Kubernetes secret update, and filesystems without inotify). A pair that
// does not load keeps the previous certificate in service.
package tlsreload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultPoll is how often Watch compares the files with the certificate
// in service.
const DefaultPoll = 2 * time.Second

// Reloader holds the certificate in service.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded [32]byte // hash of the files the certificate in service came from
	tried  [32]byte // hash of the last pair tried, good or bad (no log spam)
}

// New loads the pair once; an error here means the server cannot start.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := r.reload(true); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, nil
}

// Certificate is the certificate in service.
func (r *Reloader) Certificate() *tls.Certificate {
	c, _ := r.GetCertificate(nil)
	return c
}

// Reload reads the files again. On error the previous certificate stays.
func (r *Reloader) Reload() error {
	_, err := r.reload(true)
	return err
}

// reload loads the pair; with force it loads even when the contents are
// the ones already tried. It reports whether the certificate in service
// changed.
func (r *Reloader) reload(force bool) (bool, error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return false, fmt.Errorf("read --tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return false, fmt.Errorf("read --tls-key: %w", err)
	}
	sum := sha256.Sum256(bytes.Join([][]byte{certPEM, keyPEM}, []byte{0}))
	r.mu.Lock()
	same := sum == r.tried || sum == r.loaded
	r.mu.Unlock()
	if same && !force {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tried = sum
	if err != nil {
		return false, fmt.Errorf("load %s and %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil {
		return false, errors.New("certificate has no leaf")
	}
	r.cert, r.loaded = &cert, sum
	return true, nil
}

// Watch polls the files every interval (DefaultPoll when ≤ 0) until ctx
// ends, loading a pair whose contents changed. A bad pair (a half-written
// update, a key that does not match) is logged once and the previous
// certificate kept; it is tried again as soon as the files change again.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPoll
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := r.reload(false)
		switch {
		case err != nil:
			if err.Error() != lastErr { // once per distinct failure
				r.log.Error("TLS certificate changed on disk but does not load; keeping the previous one", "err", err)
			}
			lastErr = err.Error()
			continue
		case changed:
			leaf := r.Certificate().Leaf
			r.log.Info("TLS certificate reloaded", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
		}
		lastErr = ""
	}
}
