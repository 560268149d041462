package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/store"
)

// MaxBody is the largest request body accepted (413 above).
const MaxBody = 16 << 10

// DefaultSessionID is the session of API calls that name none: one session
// per user for clients that, like the design card's, do not track tabs.
const DefaultSessionID = "api-default"

// ErrMalformed is a body that is not the JSON the route expects. It wraps
// store.ErrInvalid, so every decoding and validation failure is one
// errors.Is away from a 400.
var ErrMalformed = fmt.Errorf("%w: malformed JSON body", store.ErrInvalid)

var (
	errUnknownAction = fmt.Errorf("%w: action must be join or leave", store.ErrInvalid)
	errTypingMissing = fmt.Errorf("%w: typing must be true or false", store.ErrInvalid)
)

// presenceRequest is POST /api/presence's body.
type presenceRequest struct {
	// Status is online, away, busy or offline (offline ends the session).
	Status    store.Status
	SessionID string
	// Metadata is nil to keep the user's metadata.
	Metadata json.RawMessage
}

// decodeObject unmarshals a JSON object (only one, nothing after it) into
// v. Field types are checked by encoding/json: a number where a string is
// expected is malformed.
func decodeObject(data []byte, v any) error {
	t := bytes.TrimSpace(data)
	if len(t) == 0 || t[0] != '{' {
		return ErrMalformed
	}
	if err := json.Unmarshal(t, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// parsePresenceRequest decodes and validates POST /api/presence's body. A
// missing status means online (the design card's default); an empty
// sessionId means DefaultSessionID.
func parsePresenceRequest(data []byte) (presenceRequest, error) {
	var raw struct {
		Status    *string         `json:"status"`
		SessionID *string         `json:"sessionId"`
		Metadata  json.RawMessage `json:"metadata"`
	}
	if err := decodeObject(data, &raw); err != nil {
		return presenceRequest{}, err
	}
	req := presenceRequest{Status: store.StatusOnline, SessionID: DefaultSessionID}
	if raw.Status != nil {
		if *raw.Status == string(store.StatusOffline) {
			req.Status = store.StatusOffline
		} else if st, ok := store.ParseStatus(*raw.Status); ok {
			req.Status = st
		} else {
			return presenceRequest{}, fmt.Errorf("%w (or offline)", store.ErrInvalidStatus)
		}
	}
	sid, err := sessionField(raw.SessionID)
	if err != nil {
		return presenceRequest{}, err
	}
	req.SessionID = sid
	if m := bytes.TrimSpace(raw.Metadata); len(m) > 0 && !bytes.Equal(m, []byte("null")) {
		if err := store.ValidateMetadata(m); err != nil {
			return presenceRequest{}, err
		}
		req.Metadata = m
	}
	return req, nil
}

func sessionField(p *string) (string, error) {
	if p == nil || *p == "" {
		return DefaultSessionID, nil
	}
	if !store.ValidSessionID(*p) {
		return "", store.ErrInvalidSessionID
	}
	return *p, nil
}

// roomAction is POST /api/presence/room/{roomId}'s body.
type roomAction struct {
	Join      bool
	SessionID string
}

func parseRoomAction(data []byte) (roomAction, error) {
	var raw struct {
		Action    string  `json:"action"`
		SessionID *string `json:"sessionId"`
	}
	if err := decodeObject(data, &raw); err != nil {
		return roomAction{}, err
	}
	var a roomAction
	switch raw.Action {
	case "join":
		a.Join = true
	case "leave":
	default:
		return roomAction{}, errUnknownAction
	}
	sid, err := sessionField(raw.SessionID)
	if err != nil {
		return roomAction{}, err
	}
	a.SessionID = sid
	return a, nil
}

// parseTyping decodes POST /api/presence/room/{roomId}/typing's body.
func parseTyping(data []byte) (bool, error) {
	var raw struct {
		Typing *bool `json:"typing"`
	}
	if err := decodeObject(data, &raw); err != nil {
		return false, err
	}
	if raw.Typing == nil {
		return false, errTypingMissing
	}
	return *raw.Typing, nil
}

// parseIDList splits "a,b,c" into at most store.MaxBatch valid user ids,
// without duplicates, in order.
func parseIDList(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, store.ErrNoUsers
	}
	parts := strings.Split(s, ",")
	if len(parts) > store.MaxBatch {
		return nil, store.ErrTooManyUsers
	}
	seen := make(map[string]struct{}, len(parts))
	ids := make([]string, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if !store.ValidUserID(p) {
			return nil, store.ErrInvalidUserID
		}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		ids = append(ids, p)
	}
	return ids, nil
}

// readBody reads at most MaxBody bytes: 413 above, whatever the
// Content-Type (sendBeacon sends text/plain, fetch application/json).
func readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > MaxBody {
		return nil, apiError(http.StatusRequestEntityTooLarge, "body over 16 KiB")
	}
	body := http.MaxBytesReader(c.Response(), r.Body, MaxBody)
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, apiError(http.StatusRequestEntityTooLarge, "body over 16 KiB")
		}
		return nil, apiError(http.StatusBadRequest, "could not read body")
	}
	return data, nil
}

func validSize(s string) bool { return s == "sm" || s == "md" || s == "lg" }

// parseSize reads ?size= (default md).
func parseSize(s string) (string, error) {
	if s == "" {
		return "md", nil
	}
	if !validSize(s) {
		return "", apiError(http.StatusBadRequest, "size must be sm, md or lg")
	}
	return s, nil
}

// parseBoolParam reads a flag like ?label=1.
func parseBoolParam(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "", "0", "false", "no", "off":
		return false, nil
	case "1", "true", "yes", "on":
		return true, nil
	}
	return false, apiError(http.StatusBadRequest, "flags take 1 or 0")
}

// MaxStack is the largest ?max= accepted.
const MaxStack = 100

// parseMax reads ?max= (default 5, 1–100).
func parseMax(s string) (int, error) {
	if s == "" {
		return 5, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxStack {
		return 0, apiError(http.StatusBadRequest, "max must be an integer from 1 to 100")
	}
	return n, nil
}
