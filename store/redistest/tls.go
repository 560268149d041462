package redistest

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/tlstest"
)

// TLSServer is a redis-server that also listens with TLS (Redis 6+ built
// with TLS, as Debian's is).
type TLSServer struct {
	*Server
	TLSAddr string // host:port of the TLS listener
	// TLSURL is rediss://127.0.0.1:port/0. Its certificate is self-signed
	// for the IP 127.0.0.1 only, and CAFile holds it.
	TLSURL string
	CAFile string
}

// StartTLS starts redis-server with a plain port (Addr, for Do) and a TLS
// port with a fresh self-signed certificate; clients need no certificate.
func StartTLS(t testing.TB) *TLSServer {
	t.Helper()
	dir := t.TempDir()
	pair := tlstest.New(t, "redistest", "127.0.0.1")
	certFile, keyFile := pair.Write(t, dir)
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		srv := StartWith(t, "--tls-port", fmt.Sprint(port), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
			"--tls-ca-cert-file", certFile, "--tls-auth-clients", "no")
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if waitReadyTLS(addr, pair, 5*time.Second) {
			return &TLSServer{Server: srv, TLSAddr: addr, TLSURL: "rediss://" + addr + "/0", CAFile: certFile}
		}
		srv.stop()
	}
	log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	t.Fatalf("redis-server's TLS port did not become ready (is it built with TLS?); log:\n%s", log)
	return nil
}

func waitReadyTLS(addr string, pair tlstest.Pair, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 200 * time.Millisecond}, "tcp", addr, &tls.Config{RootCAs: pair.Pool()})
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
