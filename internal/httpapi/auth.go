package httpapi

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Scope is a set of permissions a token grants.
type Scope uint8

// The scopes. Admin implies every other scope, and read implies metrics.
const (
	ScopeRead Scope = 1 << iota
	ScopeSubmit
	ScopeWork
	ScopeAdmin
	// ScopeMetrics reads /metrics and nothing else: for a scraper, which
	// should not be able to read payloads.
	ScopeMetrics
	// scopeNone marks routes that need no token.
	scopeNone Scope = 0
)

// implied returns s with the scopes it implies: admin implies every scope,
// read implies metrics.
func (s Scope) implied() Scope {
	switch {
	case s&ScopeAdmin != 0:
		return ScopeRead | ScopeSubmit | ScopeWork | ScopeAdmin | ScopeMetrics
	case s&ScopeRead != 0:
		return s | ScopeMetrics
	}
	return s
}

// String returns the scope names joined by commas.
func (s Scope) String() string {
	var names []string
	for _, n := range scopeNames {
		if s&n.scope != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

var scopeNames = []struct {
	name  string
	scope Scope
}{{"read", ScopeRead}, {"submit", ScopeSubmit}, {"work", ScopeWork}, {"admin", ScopeAdmin}, {"metrics", ScopeMetrics}}

// ParseScopes parses a comma-separated list of scope names.
func ParseScopes(list string) (Scope, error) {
	var s Scope
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, n := range scopeNames {
			if n.name == name {
				s |= n.scope
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown scope %q: use read, submit, work, admin or metrics", name)
		}
	}
	return s, nil
}

// Token is an accepted bearer token. Only its SHA-256 hash is kept.
type Token struct {
	// Name identifies the token in logs.
	Name   string
	Hash   [sha256.Size]byte
	Scopes Scope
}

// NewToken returns a Token for a secret given in clear text.
func NewToken(name, secret string, scopes Scope) Token {
	return Token{Name: name, Hash: sha256.Sum256([]byte(secret)), Scopes: scopes}
}

// ParseTokens reads a token file: one token a line, as
//
//	<name> <scopes> <secret>            e.g. ci submit,read s3cr3t
//	<name> <scopes> sha256:<hex>        the secret's SHA-256 instead
//
// Blank lines and lines starting with # are skipped. Prefer the sha256
// form, so that the file does not hold the secrets themselves.
func ParseTokens(r io.Reader) ([]Token, error) {
	var out []Token
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 3 {
			return nil, fmt.Errorf("token file line %d: want \"<name> <scopes> <secret or sha256:hex>\"", line)
		}
		scopes, err := ParseScopes(f[1])
		if err != nil {
			return nil, fmt.Errorf("token file line %d: %w", line, err)
		}
		t := Token{Name: f[0], Scopes: scopes}
		if hx, ok := strings.CutPrefix(f[2], "sha256:"); ok {
			b, err := hex.DecodeString(hx)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("token file line %d: sha256: needs 64 hex digits", line)
			}
			copy(t.Hash[:], b)
		} else {
			t.Hash = sha256.Sum256([]byte(f[2]))
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading token file: %w", err)
	}
	return out, nil
}

// authorize checks that the request may use the route rt: with tokens, a
// token with its scope; without, a client the server serves, and for a
// client with a verified certificate what the rules grant (Config.Rules).
func (s *Server) authorize(r *http.Request, rt route) error {
	need := rt.scope
	if len(s.cfg.Tokens) == 0 {
		if verifiedClient(r) && s.cfg.Rules != nil {
			return s.authorizeByRules(r, rt)
		}
		if !isLoopback(r.RemoteAddr) && !verifiedClient(r) && !s.cfg.AllowRemote {
			return errorf(http.StatusForbidden, "forbidden",
				"no API token is configured, so only loopback clients (and clients with a verified certificate) may connect; configure tokens to serve %s", r.RemoteAddr)
		}
		return nil
	}
	if need == scopeNone {
		return nil
	}
	secret, ok := bearer(r)
	if !ok {
		return errorf(http.StatusUnauthorized, "unauthorized",
			"this route needs \"Authorization: Bearer <token>\" with the %s scope", need)
	}
	sum := sha256.Sum256([]byte(secret))
	var granted Scope
	matched := 0
	for i := range s.cfg.Tokens {
		// Compare with every token, in constant time, whatever matches.
		eq := subtle.ConstantTimeCompare(sum[:], s.cfg.Tokens[i].Hash[:])
		matched |= eq
		granted |= Scope(subtle.ConstantTimeSelect(eq, int(s.cfg.Tokens[i].Scopes), 0))
	}
	if matched == 0 {
		return errorf(http.StatusUnauthorized, "unauthorized", "the bearer token is not valid")
	}
	if granted.implied()&need == 0 {
		return errorf(http.StatusForbidden, "forbidden", "the token's scopes (%s) do not include %s", granted, need)
	}
	return nil
}

// bearer returns the request's bearer token: the Authorization header, or
// for event streams (EventSource cannot set headers) the access_token query
// parameter.
func bearer(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && tok != "" {
			return strings.TrimSpace(tok), true
		}
		return "", false
	}
	if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			return tok, true
		}
	}
	return "", false
}

// verifiedClient reports whether the request came over TLS with a client
// certificate that the listener verified against its client CAs.
func verifiedClient(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
