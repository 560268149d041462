package store

import "errors"

// Sentinel errors. Every validation error wraps ErrInvalid, so a caller can
// map all of them to one 400 answer with errors.Is(err, ErrInvalid).
var (
	ErrInvalid           = errors.New("invalid input")
	ErrInvalidUserID     = invalid("user id must be 1-128 characters of A-Z a-z 0-9 _ . : @ -")
	ErrInvalidRoomID     = invalid("room id must be 1-128 characters of A-Z a-z 0-9 _ . : @ -")
	ErrInvalidSessionID  = invalid("session id must be 8-64 characters of A-Z a-z 0-9 _ -")
	ErrInvalidStatus     = invalid("status must be online, away or busy")
	ErrMetadataTooLarge  = invalid("metadata must be at most 2048 bytes")
	ErrMetadataNotObject = invalid("metadata must be a JSON object")
	ErrTooManyUsers      = invalid("at most 100 user ids per request")
	ErrNoUsers           = invalid("at least one user id is required")
	ErrInvalidHold       = invalid("hold must not be negative")

	// ErrLimit is wrapped by the errors of a request that would take a user
	// past a per-user limit; the gateway answers 429.
	ErrLimit           = errors.New("limit reached")
	ErrTooManySessions = limited("a user may have at most 32 live sessions")
	ErrTooManyRooms    = limited("a session may be in at most 64 rooms")

	// ErrSessionEnded: a RefreshStreams item named a session that was ended
	// explicitly (EndSession) within Options.EndedRetention. The stream's
	// refresh must not bring it back; only the client itself can, with an
	// explicit Heartbeat or Join. Not a client error: the gateway stops
	// refreshing that stream's session.
	ErrSessionEnded = errors.New("session ended explicitly")
	// ErrNotMember: SetTyping(true) by a user who is not a member of the
	// room. The gateway answers 409 Conflict (the request is well formed and
	// allowed, but conflicts with the current state: join first).
	ErrNotMember = errors.New("not a member of the room: join it before typing")

	// ErrSlowSubscriber closes a feed subscription that fell too far behind.
	ErrSlowSubscriber = errors.New("subscriber too slow: events dropped, re-read state and subscribe again")
	// ErrClosed is returned by a store that has been closed.
	ErrClosed = errors.New("store closed")
)

type validationError struct{ msg string }

func invalid(msg string) error             { return &validationError{msg} }
func (e *validationError) Error() string   { return e.msg }
func (e *validationError) Is(t error) bool { return t == ErrInvalid }

type limitError struct{ msg string }

func limited(msg string) error        { return &limitError{msg} }
func (e *limitError) Error() string   { return e.msg }
func (e *limitError) Is(t error) bool { return t == ErrLimit }
