package handlers

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// staticFile is one embedded file with its validator.
type staticFile struct {
	body  []byte
	etag  string // quoted
	hash  string // 16 hex characters of its SHA-256: the ?v= of a versioned URL
	ctype string
}

// staticFiles indexes an embedded tree once at start: ETags are content
// hashes, so they are the same on every node and change exactly when the
// file does.
type staticFiles map[string]*staticFile

func loadStatic(fsys fs.FS) (staticFiles, error) {
	out := staticFiles{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:8])
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = http.DetectContentType(b)
		}
		out[p] = &staticFile{body: b, etag: `"` + h + `"`, hash: h, ctype: ct}
		return nil
	})
	return out, err
}

// Version returns the content hash of a static file (path under static/),
// for versioned URLs: /static/presence.js?v=<hash> is cached for a year.
func (s staticFiles) Version(p string) string {
	if f := s[strings.TrimPrefix(p, "/")]; f != nil {
		return f.hash
	}
	return ""
}

// serve serves GET /static/*. A URL whose ?v= matches the content hash is
// immutable; any other is cached but revalidated (ETag → 304).
func (s staticFiles) serve(c echo.Context) error {
	p := pathParam(c, "*")
	f := s[p]
	if f == nil || strings.Contains(p, "..") {
		return apiError(http.StatusNotFound, "not found")
	}
	h := c.Response().Header()
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", f.etag)
	if v := c.QueryParam("v"); v != "" && v == f.hash {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "public, no-cache")
	}
	// Static files are public: any page may load them (the widget embedded
	// elsewhere loads its script and stylesheet from here).
	h.Set("Access-Control-Allow-Origin", "*")
	http.ServeContent(c.Response(), c.Request(), path.Base(p), time.Time{}, bytes.NewReader(f.body))
	return nil
}

// favicon answers the browser's automatic /favicon.ico with the SVG icon.
func (s *Server) favicon(c echo.Context) error {
	if s.static["favicon.svg"] == nil {
		return apiError(http.StatusNotFound, "not found")
	}
	return c.Redirect(http.StatusMovedPermanently, "/static/favicon.svg")
}
