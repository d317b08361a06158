package auth

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// globRegexp is an independent reference for glob matching.
func globRegexp(p string) *regexp.Regexp {
	var sb strings.Builder
	sb.WriteString(`\A(?s:`)
	for _, r := range []byte(p) {
		switch r {
		case '*':
			sb.WriteString(`.*`)
		case '?':
			sb.WriteString(`.`)
		default:
			sb.WriteString(regexp.QuoteMeta(string([]byte{r})))
		}
	}
	sb.WriteString(`)\z`)
	return regexp.MustCompile(sb.String())
}

func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{{"*", ""}, {"a*b?c", "axbyc"}, {"*.send", "email.send"}, {"??*", "x"}, {"a*a*a*b", "aaaaaaaa"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		g, err := compileGlob(pattern)
		if err != nil {
			return
		}
		// The reference works on bytes; skip what regexp cannot express
		// byte-wise (invalid UTF-8 makes '.' match a whole rune).
		if !isASCII(pattern) || !isASCII(name) {
			g.match(name)
			return
		}
		require.Equal(t, globRegexp(pattern).MatchString(name), g.match(name), "%q ~ %q", pattern, name)
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FuzzPolicy feeds arbitrary YAML through the rule compiler and checks the
// policy's invariants for an arbitrary identity and name: deny wins, and
// nothing is allowed that no matching rule allows.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte("rules:\n- match: {any: true}\n  allow: {submit: ['*']}\n  deny: {submit: ['b*']}\n"), "10.0.0.1", "cn", "bill")
	f.Add([]byte("rules:\n- match: {cn: ['w-*'], address: ['10.0.0.0/8']}\n  allow: {serve: ['*'], admin: ['*']}\n"), "10.1.2.3", "w-1", "shutdown")
	f.Add([]byte("rules: [{match: {san: ['*.x']}, allow: {submit: [a?c]}}]"), "::1", "", "abc")
	f.Fuzz(func(t *testing.T, doc []byte, addr, cn, name string) {
		var cfg Config
		if yaml.Unmarshal(doc, &cfg) != nil {
			return
		}
		p, err := New(cfg)
		if err != nil {
			return
		}
		id := Identity{Verified: cn != "", CommonName: cn, Names: []string{cn}}
		id.Addr, _ = netip.ParseAddr(addr)
		g := p.Grant(id)
		for a := range numActions {
			got := g.Allow(a, name)
			require.Equal(t, got, p.Allow(id, a, name))
			var allowed, denied bool
			for _, rc := range cfg.Rules {
				r, err := compileRule(rc)
				require.NoError(t, err)
				if !r.matches(id) {
					continue
				}
				allowed = allowed || r.allow[a].match(name)
				denied = denied || r.deny[a].match(name)
			}
			require.Equal(t, allowed && !denied, got, "action %s name %q", a, name)
			if got {
				require.True(t, g.Any())
			}
		}
	})
}
