package store

import (
	"bytes"
	"encoding/json"
)

// ValidUserID reports whether s is a valid user id (and, by the same rule, a
// valid room id): 1–128 characters of A–Z a–z 0–9 _ . : @ -.
func ValidUserID(s string) bool { return validID(s, 1, 128, true) }

// ValidRoomID reports whether s is a valid room id.
func ValidRoomID(s string) bool { return validID(s, 1, 128, true) }

// ValidSessionID reports whether s is a valid session id: 8–64 characters of
// A–Z a–z 0–9 _ -.
func ValidSessionID(s string) bool { return validID(s, 8, 64, false) }

// validID is hand-rolled rather than a regexp because it runs on every
// request and every id in a batch.
func validID(s string, minLen, maxLen int, extended bool) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		case extended && (c == '.' || c == ':' || c == '@'):
		default:
			return false
		}
	}
	return true
}

// ParseStatus accepts the statuses a session can report (not offline, which
// is EndSession).
func ParseStatus(s string) (Status, bool) {
	switch st := Status(s); st {
	case StatusOnline, StatusAway, StatusBusy:
		return st, true
	}
	return "", false
}

func validateProfile(p Profile) error {
	if !ValidUserID(p.ID) {
		return ErrInvalidUserID
	}
	return nil
}

// validateSession checks the ids that name one session.
func validateSession(userID, sessionID string) error {
	if !ValidUserID(userID) {
		return ErrInvalidUserID
	}
	if !ValidSessionID(sessionID) {
		return ErrInvalidSessionID
	}
	return nil
}

// validateRoomSession checks the ids that name one session in one room.
func validateRoomSession(roomID, userID, sessionID string) error {
	if !ValidRoomID(roomID) {
		return ErrInvalidRoomID
	}
	return validateSession(userID, sessionID)
}

func validateHeartbeat(hb Heartbeat) error {
	if err := validateProfile(hb.User); err != nil {
		return err
	}
	if !ValidSessionID(hb.SessionID) {
		return ErrInvalidSessionID
	}
	if hb.Status != "" {
		if _, ok := ParseStatus(string(hb.Status)); !ok {
			return ErrInvalidStatus
		}
	}
	if hb.Hold < 0 {
		return ErrInvalidHold
	}
	return ValidateMetadata(hb.Metadata)
}

// validateRefresh checks one RefreshStreams item.
func validateRefresh(it StreamRefresh) error {
	if err := validateSession(it.User.ID, it.SessionID); err != nil {
		return err
	}
	if it.Room != "" && !ValidRoomID(it.Room) {
		return ErrInvalidRoomID
	}
	if it.Hold < 0 {
		return ErrInvalidHold
	}
	return nil
}

// ValidateMetadata accepts nil (keep) or a JSON object of at most
// MaxMetadata bytes.
func ValidateMetadata(m json.RawMessage) error {
	if m == nil {
		return nil
	}
	if len(m) > MaxMetadata {
		return ErrMetadataTooLarge
	}
	t := bytes.TrimSpace(m)
	if len(t) == 0 || t[0] != '{' || !json.Valid(t) {
		return ErrMetadataNotObject
	}
	return nil
}

func validateUserIDs(ids []string) error {
	if len(ids) == 0 {
		return ErrNoUsers
	}
	if len(ids) > MaxBatch {
		return ErrTooManyUsers
	}
	for _, id := range ids {
		if !ValidUserID(id) {
			return ErrInvalidUserID
		}
	}
	return nil
}
