package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// CookieName is the cookie a token is read from (after the Authorization
// header, before ?token=).
const CookieName = "presence_token"

// Sentinel errors of token verification: 401, except ErrClaimLimit (400)
// and the 403s ErrRoomDenied and ErrCrossSite.
var (
	ErrNoToken    = errors.New("missing token: send Authorization: Bearer, the presence_token cookie or ?token=")
	ErrBadToken   = errors.New("invalid token")
	ErrRoomDenied = errors.New("room not allowed by this token")
	ErrCrossSite  = errors.New("cross-site request refused: cookie-authenticated changes must come from this origin or an allowed one")
	// ErrClaimLimit is a correctly signed token whose claims break the
	// gateway's limits (a name over 64 characters, an avatar that is not an
	// http(s) URL or a path, …): 400 on every route, since a new token is
	// needed, not a retry.
	ErrClaimLimit   = errors.New("token refused")
	errNotCanonical = errors.New("token is not in canonical form (base64url without padding, line breaks or other characters)")
	errTokenSubject = errors.New("token sub is not a valid user id")
)

// Claims are the token's claims: sub (RegisteredClaims.Subject), name,
// avatar, exp and the optional rooms allow-list.
type Claims struct {
	Name   string `json:"name,omitempty"`
	Avatar string `json:"avatar,omitempty"`
	// Rooms limits which rooms the holder may join or watch. nil (absent or
	// null) means any room; an empty array means none (omitzero, unlike
	// omitempty, keeps an empty array in a minted token).
	Rooms []string `json:"rooms,omitzero"`
	// See, when present, limits whose status and metadata the holder may
	// read (visibility.go); absent means anyone's.
	See *See `json:"see,omitempty"`
	jwt.RegisteredClaims
}

// TokenSource says where a request's token came from. Only a cookie is sent
// by the browser on its own, so only cookie-authenticated changes need the
// cross-site check.
type TokenSource int

// Token sources, in the order they are looked for.
const (
	FromHeader TokenSource = iota + 1
	FromCookie
	FromQuery
)

// Identity is the verified holder of a token.
type Identity struct {
	User store.Profile
	// Rooms is the token's allow-list; nil means any room.
	Rooms []string
	// See is the token's visibility claim; nil means the holder may read
	// anyone (see visibility.go).
	See    *See
	Source TokenSource
	// Token is the raw token, so that a rendered widget can hand it on to
	// its stream (?token=) when the page got it that way.
	Token string
	// Expires is the token's exp; a stream opened with it is closed once
	// the token would no longer be accepted (acceptedUntil).
	Expires time.Time
}

// MayAccess reports whether the identity may join or watch room.
func (id Identity) MayAccess(room string) bool {
	return id.Rooms == nil || slices.Contains(id.Rooms, room)
}

// tokenLeeway is the clock skew Verify tolerates on exp (and nbf, iat).
const tokenLeeway = 5 * time.Second

// acceptedUntil is when a token with this identity's exp stops being
// accepted: a stream closed then gets 401 if it reconnects with the same
// token, rather than being accepted and closed again at once. Zero for an
// identity without an expiry.
func (id Identity) acceptedUntil() time.Time {
	if id.Expires.IsZero() {
		return time.Time{}
	}
	return id.Expires.Add(tokenLeeway)
}

// Auth verifies and mints HS256 tokens with one secret. The parser only
// accepts HS256 (no "none", no algorithm confusion with RS/ES keys) and
// requires exp.
type Auth struct {
	secret []byte
	parser *jwt.Parser
	now    func() time.Time

	// cache holds tokens already verified, so that a heartbeat every 30 s
	// does not parse and HMAC the same bytes again. A hit is the very same
	// (canonical) token string; its expiry is checked again on every hit.
	cache *tokenCache
}

// NewAuth returns an Auth for secret.
func NewAuth(secret []byte) *Auth {
	a := &Auth{}
	*a = Auth{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(tokenLeeway),
			// Strict base64: a signature whose unused trailing bits are set
			// decodes to the same bytes as the real one and would otherwise
			// be a second spelling of one token (canonicalToken refuses
			// line breaks, which even strict decoding skips).
			jwt.WithStrictDecoding(),
			jwt.WithTimeFunc(func() time.Time { return a.now() }),
		),
		now:   time.Now,
		cache: newTokenCache(DefaultTokenCacheBytes),
	}
	return a
}

// Verify checks a token's form, signature, algorithm, expiry and claims and
// returns who holds it. A failure of the token itself wraps ErrBadToken
// (401); a signed token whose claims break the limits wraps ErrClaimLimit
// (400).
func (a *Auth) Verify(raw string) (Identity, error) {
	if id, ok := a.cache.get(raw, a.now()); ok {
		return id, nil
	}
	id, err := a.verify(raw)
	if err != nil {
		return id, err
	}
	a.cache.put(id)
	return id, nil
}

// MaxTokenBytes is the longest token accepted.
const MaxTokenBytes = 32 << 10

// canonicalToken reports whether raw is three base64url segments with
// nothing else in them. Go's base64 decoder skips CR and LF even in strict
// mode, so without this check "sig%0A" would verify as a second spelling
// of the same token.
func canonicalToken(raw string) bool {
	if strings.Count(raw, ".") != 2 {
		return false
	}
	for i := 0; i < len(raw); i++ {
		switch b := raw[i]; {
		case b >= 'A' && b <= 'Z', b >= 'a' && b <= 'z', b >= '0' && b <= '9', b == '-', b == '_', b == '.':
		default:
			return false
		}
	}
	return true
}

func (a *Auth) verify(raw string) (Identity, error) {
	if len(raw) > MaxTokenBytes {
		return Identity{}, claimError("the token has %d bytes, at most %d allowed", len(raw), MaxTokenBytes)
	}
	if !canonicalToken(raw) {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadToken, errNotCanonical)
	}
	var cl Claims
	_, err := a.parser.ParseWithClaims(raw, &cl, func(*jwt.Token) (any, error) { return a.secret, nil })
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	if !store.ValidUserID(cl.Subject) {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadToken, errTokenSubject)
	}
	// The limits apply to the claims as given: a missing name shows the
	// id, which may be longer than a name (128 characters).
	name := strings.TrimSpace(cl.Name)
	avatar := strings.TrimSpace(cl.Avatar)
	if err := checkProfile(name, avatar); err != nil {
		return Identity{}, err
	}
	if name == "" {
		name = cl.Subject
	}
	if err := cl.See.check(); err != nil {
		return Identity{}, err
	}
	return Identity{
		User:    store.Profile{ID: cl.Subject, Name: name, Avatar: avatar},
		Rooms:   cl.Rooms,
		See:     cl.See,
		Token:   raw,
		Expires: cl.ExpiresAt.Time, // required by the parser
	}, nil
}

// Limits of what a token may put on everyone's screens: a display name
// and an avatar URL are pushed to every watcher of the user, so their size
// is bounded here, where the token is accepted.
const (
	// MaxNameChars is the longest display name, in characters (runes).
	MaxNameChars = 64
	// MaxAvatarBytes is the longest avatar URL.
	MaxAvatarBytes = 2048
)

func claimError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrClaimLimit, fmt.Sprintf(format, args...))
}

// checkProfile enforces the name and avatar limits (both trimmed; an
// empty name is fine).
func checkProfile(name, avatar string) error {
	if !utf8.ValidString(name) {
		return claimError("name is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(name); n > MaxNameChars {
		return claimError("name has %d characters, at most %d allowed", n, MaxNameChars)
	}
	// A line break or other control character in a name has no business
	// on screen and can break framings downstream (SSE lines).
	if strings.ContainsFunc(name, unicode.IsControl) {
		return claimError("name must not contain control characters (line breaks, tabs, NUL, …)")
	}
	if avatar == "" {
		return nil
	}
	if len(avatar) > MaxAvatarBytes {
		return claimError("avatar URL has %d bytes, at most %d allowed", len(avatar), MaxAvatarBytes)
	}
	if !validAvatarURL(avatar) {
		return claimError("avatar must be an http(s) URL or a path starting with /")
	}
	return nil
}

// validAvatarURL accepts an absolute http(s) URL with a host, or a path on
// the host page's origin ("/img/a.png", not "//host" or "/\host"), without
// whitespace or control characters: never javascript:, data: and the like.
func validAvatarURL(u string) bool {
	if !utf8.ValidString(u) || strings.ContainsFunc(u, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) ||
		strings.Contains(u, "\\") {
		return false
	}
	if strings.HasPrefix(u, "/") {
		if strings.HasPrefix(u, "//") {
			return false
		}
		p, err := url.Parse(u)
		return err == nil && p.Scheme == "" && p.Host == ""
	}
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || p.User != nil {
		return false
	}
	s := strings.ToLower(p.Scheme)
	return s == "https" || s == "http"
}

// Mint signs a token for p, valid for ttl. rooms nil means any room.
func (a *Auth) Mint(p store.Profile, ttl time.Duration, rooms []string) (string, error) {
	return a.MintSee(p, ttl, rooms, nil)
}

// MintSee is Mint with a visibility claim (nil: the holder sees anyone).
func (a *Auth) MintSee(p store.Profile, ttl time.Duration, rooms []string, see *See) (string, error) {
	now := a.now()
	cl := Claims{
		Name:   p.Name,
		Avatar: p.Avatar,
		Rooms:  rooms,
		See:    see,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   p.ID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, cl).SignedString(a.secret)
}

// tokenFrom finds a request's token: Authorization: Bearer, then the
// cookie, then ?token=. An Authorization header that is present but not a
// bearer token is an error rather than a fall-through, so that a client
// never gets authenticated as someone else's cookie by mistake.
func tokenFrom(r *http.Request) (string, TokenSource, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", 0, fmt.Errorf("%w: Authorization must be \"Bearer <token>\"", ErrBadToken)
		}
		return strings.TrimSpace(tok), FromHeader, nil
	}
	if ck, err := r.Cookie(CookieName); err == nil && ck.Value != "" {
		return ck.Value, FromCookie, nil
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t, FromQuery, nil
	}
	return "", 0, ErrNoToken
}

// identify verifies the request's token.
func (a *Auth) identify(r *http.Request) (Identity, error) {
	raw, src, err := tokenFrom(r)
	if err != nil {
		return Identity{}, err
	}
	id, err := a.Verify(raw)
	if err != nil {
		return Identity{}, err
	}
	id.Source = src
	return id, nil
}

const identityKey = "presenced.identity"

// identity is the verified identity requireAuth stored on the context.
func identity(c echo.Context) Identity {
	id, _ := c.Get(identityKey).(Identity)
	return id
}

// requireAuth answers 401 without a valid token. For cookie-authenticated
// requests that change state (unsafe methods, and the room stream, which
// joins the room) it also refuses cross-site requests: SameSite=Lax already
// keeps the cookie off cross-site subresource requests and POSTs, and the
// Origin / Sec-Fetch-Site check covers same-site attackers (a sibling
// subdomain) and older browsers. A bearer or ?token= request carries its
// credential explicitly, so a forged request cannot have it: no check.
func (s *Server) requireAuth(changesState bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id, err := s.auth.identify(c.Request())
			if errors.Is(err, ErrClaimLimit) {
				return apiError(http.StatusBadRequest, err.Error())
			}
			if err != nil {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="presenced"`)
				return apiError(http.StatusUnauthorized, err.Error())
			}
			r := c.Request()
			unsafe := changesState || (r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions)
			if unsafe && id.Source == FromCookie && !s.sameOrigin(r) {
				return apiError(http.StatusForbidden, ErrCrossSite.Error())
			}
			c.Set(identityKey, id)
			return next(c)
		}
	}
}

// sameOrigin reports whether a browser request comes from this gateway's own
// origin or an allow-listed one. Browsers send Origin on every POST and on
// cross-origin requests, and Sec-Fetch-Site on everything; a request with
// neither is not from a browser (curl, a server), which cannot be made to
// carry someone's cookie, so it passes.
func (s *Server) sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		n, err := config.NormalizeOrigin(o)
		if err != nil {
			return false
		}
		return n == selfOrigin(r) || s.originAllowed(n, true)
	}
	// No Origin, or "null" (sandboxed frames, privacy-sensitive redirects):
	// Sec-Fetch-Site, which pages cannot forge, decides.
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
		return r.Header.Get("Origin") == "" // not a browser; a bare "null" is refused
	}
	return false
}

// originAllowed reports whether origin (normalized) is on --allow-origin.
// "*" counts for CORS reads only: a wildcard must never let a cookie-authenticated
// change through.
func (s *Server) originAllowed(origin string, forCookie bool) bool {
	for _, o := range s.cfg.AllowOrigins {
		if o == origin || (o == "*" && !forCookie) {
			return true
		}
	}
	return false
}

// selfOrigin is the origin the request was addressed to: --public-url, or
// what the forwarded middleware derived from the request (proxy.go).
// Outside that middleware only the request's own TLS state and Host count.
func selfOrigin(r *http.Request) string {
	if o, ok := r.Context().Value(originKey{}).(string); ok {
		return o
	}
	return requestOrigin(r, false)
}

// roomParam reads and validates a room id path parameter and checks the
// identity may access it: 400 for a bad id, 403 for a room outside the
// token's rooms.
func roomParam(c echo.Context) (string, error) {
	room := pathParam(c, "roomId")
	if !store.ValidRoomID(room) {
		return "", apiError(http.StatusBadRequest, store.ErrInvalidRoomID.Error())
	}
	if !identity(c).MayAccess(room) {
		return "", apiError(http.StatusForbidden, ErrRoomDenied.Error())
	}
	return room, nil
}
