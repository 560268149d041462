// Command echo-mount is an existing Echo app with presenced mounted inside
// it under /presence: the app renders its own page, fetches the live widget
// from the gateway in-process, and the browser talks to /presence/… on the
// app's own origin (no CORS, one cookie domain).
//
//	go run ./examples/echo-mount    # then open http://localhost:8090/?user=alice
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/gateway"
	"github.com/presenced/presenced/store"
)

var page = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Acme · {{.Room}}</title></head>
<body>
  <h1>Acme · {{.Room}}</h1>
  <p>Signed in as {{.User}}.</p>
  {{.Widget}}
</body></html>`))

// newApp is the host app: its own routes, plus the gateway under /presence.
func newApp(gw *gateway.Gateway) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.Any("/presence/*", echo.WrapHandler(gw.Handler()))
	e.GET("/", func(c echo.Context) error {
		user := c.QueryParam("user")
		if user == "" {
			user = "guest"
		}
		tok, err := gw.MintToken(store.Profile{ID: user, Name: user}, time.Hour, nil)
		if err != nil {
			return err
		}
		// The widget, rendered by the gateway in-process (no network hop).
		req := httptest.NewRequest(http.MethodGet, "/presence/fragments/room/lobby/live?"+url.Values{"token": {tok}}.Encode(), nil)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		rec := httptest.NewRecorder()
		gw.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			return fmt.Errorf("live widget: %d %s", rec.Code, rec.Body)
		}
		widget, _ := io.ReadAll(rec.Body)
		c.Response().Header().Set("Content-Type", "text/html; charset=utf-8")
		return page.Execute(c.Response(), map[string]any{"Room": "lobby", "User": user, "Widget": template.HTML(widget)})
	})
	return e
}

func newGateway(log *slog.Logger) (*gateway.Gateway, store.Store, error) {
	secret := []byte(os.Getenv("PRESENCE_SECRET"))
	if len(secret) == 0 {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		secret = []byte(hex.EncodeToString(b))
	}
	cfg := gateway.DefaultConfig()
	cfg.Secret = secret
	cfg.BasePath = "/presence"
	st := store.NewMemory(store.Options{})
	gw, err := gateway.New(cfg, st, log)
	if err != nil {
		_ = st.Close()
		return nil, nil, err
	}
	return gw, st, nil
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	gw, st, err := newGateway(log)
	if err != nil {
		log.Error("gateway", "err", err)
		os.Exit(1)
	}
	defer st.Close()
	if err := gw.Start(); err != nil {
		log.Error("gateway start", "err", err)
		os.Exit(1)
	}
	app := newApp(gw)
	go func() {
		if err := app.Start(":8090"); err != nil && err != http.ErrServerClosed {
			log.Error("serve", "err", err)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = gw.Shutdown(sctx) // streams first: they would hold the app's shutdown
	_ = app.Shutdown(sctx)
}
