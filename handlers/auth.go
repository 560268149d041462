package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// CookieName is the cookie a token is read from (after the Authorization
// header, before ?token=).
const CookieName = "presence_token"

// Sentinel errors of token verification; all of them answer 401.
var (
	ErrNoToken      = errors.New("missing token: send Authorization: Bearer, the presence_token cookie or ?token=")
	ErrBadToken     = errors.New("invalid token")
	ErrRoomDenied   = errors.New("room not allowed by this token")
	ErrCrossSite    = errors.New("cross-site request refused: cookie-authenticated changes must come from this origin or an allowed one")
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
	Rooms  []string
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
	// token string; its expiry is checked again on every hit.
	cacheMu sync.Mutex
	cache   map[string]Identity
}

// maxCachedTokens bounds the verified-token cache; when full it is emptied.
const maxCachedTokens = 100_000

// NewAuth returns an Auth for secret.
func NewAuth(secret []byte) *Auth {
	return &Auth{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(tokenLeeway),
		),
		now: time.Now,
	}
}

// Verify checks a token's signature, algorithm and expiry and returns who
// holds it. Every failure wraps ErrBadToken.
func (a *Auth) Verify(raw string) (Identity, error) {
	a.cacheMu.Lock()
	id, ok := a.cache[raw]
	a.cacheMu.Unlock()
	if ok && a.now().Before(id.Expires.Add(5*time.Second)) { // the parser's leeway
		return id, nil
	}
	id, err := a.verify(raw)
	if err != nil {
		return id, err
	}
	a.cacheMu.Lock()
	if a.cache == nil || len(a.cache) >= maxCachedTokens {
		a.cache = make(map[string]Identity)
	}
	a.cache[raw] = id
	a.cacheMu.Unlock()
	return id, nil
}

func (a *Auth) verify(raw string) (Identity, error) {
	var cl Claims
	_, err := a.parser.ParseWithClaims(raw, &cl, func(*jwt.Token) (any, error) { return a.secret, nil })
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	if !store.ValidUserID(cl.Subject) {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadToken, errTokenSubject)
	}
	name := strings.TrimSpace(cl.Name)
	if name == "" {
		name = cl.Subject
	}
	return Identity{
		User:    store.Profile{ID: cl.Subject, Name: name, Avatar: cl.Avatar},
		Rooms:   cl.Rooms,
		Token:   raw,
		Expires: cl.ExpiresAt.Time, // required by the parser
	}, nil
}

// Mint signs a token for p, valid for ttl. rooms nil means any room.
func (a *Auth) Mint(p store.Profile, ttl time.Duration, rooms []string) (string, error) {
	now := a.now()
	cl := Claims{
		Name:   p.Name,
		Avatar: p.Avatar,
		Rooms:  rooms,
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
