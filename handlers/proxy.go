package handlers

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/internal/config"
)

// originKey carries the request's origin, as the forwarded middleware
// decided it, to selfOrigin.
type originKey struct{}

// forwarded decides, once per request, which origin the request was
// addressed to (selfOrigin): --public-url when set, never the Host header;
// otherwise the request's Host and TLS state, with X-Forwarded-Proto/Host
// believed only from --trusted-proxies. From any other peer the
// X-Forwarded-* headers are removed, so that nothing further down can be
// fooled by them.
func (s *Server) forwarded(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		trusted := s.trustedPeer(r.RemoteAddr)
		if !trusted {
			for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-For", "Forwarded"} {
				if r.Header.Get(h) != "" && s.cfg.PublicURL == "" && !s.warnedForwarded.Swap(true) {
					// Once: behind a proxy that terminates TLS this is why
					// cookie POSTs from https pages get 403.
					s.log.Warn("ignoring X-Forwarded-* from a peer not on --trusted-proxies; behind a reverse proxy set --public-url (and --trusted-proxies to the proxy's address)",
						"peer", r.RemoteAddr, "header", h)
				}
				r.Header.Del(h)
			}
		}
		origin := s.cfg.PublicURL
		if origin == "" {
			origin = requestOrigin(r, trusted)
		}
		c.SetRequest(r.WithContext(context.WithValue(r.Context(), originKey{}, origin)))
		return next(c)
	}
}

// trustedPeer reports whether the TCP peer is on --trusted-proxies.
func (s *Server) trustedPeer(remoteAddr string) bool {
	if len(s.cfg.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// requestOrigin is the origin derived from the request itself (no
// --public-url): its TLS state and Host, or, from a trusted proxy, the
// first X-Forwarded-Proto and X-Forwarded-Host.
func requestOrigin(r *http.Request, trusted bool) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	} else if p := r.Header.Get("X-Forwarded-Proto"); trusted && p != "" {
		p, _, _ = strings.Cut(p, ",")
		if p = strings.ToLower(strings.TrimSpace(p)); p == "https" || p == "http" {
			scheme = p
		}
	}
	host := r.Host
	if h := r.Header.Get("X-Forwarded-Host"); trusted && h != "" {
		h, _, _ = strings.Cut(h, ",")
		host = strings.TrimSpace(h)
	}
	if n, err := config.NormalizeOrigin(scheme + "://" + host); err == nil {
		return n
	}
	return scheme + "://" + strings.ToLower(host)
}

// ipExtractor makes c.RealIP() the TCP peer, or, behind --trusted-proxies,
// the nearest untrusted address in X-Forwarded-For.
func (s *Server) ipExtractor() echo.IPExtractor {
	if len(s.cfg.TrustedProxies) == 0 {
		return echo.ExtractIPDirect()
	}
	// Echo trusts loopback and private ranges by default: only the
	// configured ones here.
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range s.cfg.TrustedProxies {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
