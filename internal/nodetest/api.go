package nodetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/presenced/presenced/internal/eventstream"
)

// RoomMembers reads GET /api/presence/room/{room}: member id → status.
func RoomMembers(ctx context.Context, c *http.Client, base, room, token string) (map[string]string, error) {
	code, b, err := Do(ctx, c, http.MethodGet, base+"/api/presence/room/"+url.PathEscape(room), token, "")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET room %s: %d %s", room, code, b)
	}
	var v struct {
		Members []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"members"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(v.Members))
	for _, m := range v.Members {
		out[m.ID] = m.Status
	}
	return out, nil
}

// UserStatus reads one user's aggregate status from GET /api/presence
// ("offline" for a user never seen).
func UserStatus(ctx context.Context, c *http.Client, base, user, token string) (string, error) {
	code, b, err := Do(ctx, c, http.MethodGet, base+"/api/presence?userIds="+url.QueryEscape(user), token, "")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET presence %s: %d %s", user, code, b)
	}
	var v struct {
		Presence map[string]*struct {
			Status string `json:"status"`
		} `json:"presence"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	if p := v.Presence[user]; p != nil {
		return p.Status, nil
	}
	return "offline", nil
}

// Tab is a browser tab's room stream (GET /sse?room=…&sid=…&format=json)
// over plain HTTP, read with internal/eventstream's parser.
type Tab struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// OpenTab opens a room stream as the token's user in session sid and
// returns once its first sync arrived (the session is then in the room).
func OpenTab(ctx context.Context, base, room, sid, token string) (*Tab, error) {
	ctx, cancel := context.WithCancel(ctx)
	u := fmt.Sprintf("%s/sse?room=%s&sid=%s&format=json", base, url.QueryEscape(room), url.QueryEscape(sid))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	// Its own transport: closing the tab must close its TCP connection, as
	// a browser tab going away does, not return it to a shared pool.
	tr := &http.Transport{DisableKeepAlives: true}
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		res.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET %s: %d %s", u, res.StatusCode, b)
	}
	synced := make(chan error, 1)
	t := &Tab{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer res.Body.Close()
		p := eventstream.NewParser(res.Body)
		first := true
		for {
			ev, err := p.Next()
			if err != nil {
				if first {
					synced <- err
				}
				return
			}
			if first && ev.Type == "sync" {
				first = false
				synced <- nil
			}
		}
	}()
	select {
	case err := <-synced:
		if err != nil {
			cancel()
			<-t.done
			return nil, fmt.Errorf("stream ended before its sync: %w", err)
		}
		return t, nil
	case <-time.After(10 * time.Second):
		cancel()
		<-t.done
		return nil, fmt.Errorf("no sync within 10 s on %s", u)
	}
}

// Close closes the tab's connection (no explicit offline: the tab just
// goes away) and waits for its reader to end.
func (t *Tab) Close() {
	t.cancel()
	<-t.done
}
