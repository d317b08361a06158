package auth

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
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

// FuzzPolicy feeds arbitrary YAML through the rule compiler and compares
// the policy's decision for an arbitrary identity, action and name with
// modelAllow, which reads the configuration itself as docs/security.md
// describes it (rules and-ed fields, any matching rule allows, any
// matching rule's deny wins), with globRegexp for patterns.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte("rules:\n- match: {any: true}\n  allow: {submit: ['*']}\n  deny: {submit: ['b*']}\n"), "10.0.0.1", "cn", "bill")
	f.Add([]byte("rules:\n- match: {cn: ['w-*'], address: ['10.0.0.0/8']}\n  allow: {serve: ['*'], admin: ['*']}\n"), "10.1.2.3", "w-1", "shutdown")
	f.Add([]byte("rules: [{match: {san: ['*.x']}, allow: {submit: [a?c]}}]"), "::1", "", "abc")
	f.Add([]byte("rules:\n- match: {address: ['::ffff:10.0.0.0/104', '192.0.2.7']}\n  allow: {read: ['r*']}\n- match: {verified: true}\n  deny: {read: ['*secret*']}\n"), "10.9.9.9", "ops", "reports")
	f.Add([]byte("rules: [{match: {address: ['192.0.2.0/24']}, allow: {submit: ['*']}}]"), "10.0.0.1", "", "f")
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
		modelled := isASCII(cn) && isASCII(name) && allASCII(cfg)
		for a := range numActions {
			got := g.Allow(a, name)
			require.Equal(t, got, p.Allow(id, a, name), "Grant and Policy agree")
			if got {
				require.True(t, g.Any())
			}
			if modelled {
				require.Equal(t, modelAllow(t, cfg, id, a, name), got, "action %s name %q identity %+v", a, name, id)
			}
		}
	})
}

// allASCII reports whether every pattern of cfg is ASCII (globRegexp works
// byte-wise only there).
func allASCII(cfg Config) bool {
	for _, r := range cfg.Rules {
		for _, ps := range [][]string{r.Match.CommonName, r.Match.SAN, r.Allow.Submit, r.Allow.Serve, r.Allow.Admin,
			r.Allow.Read, r.Deny.Submit, r.Deny.Serve, r.Deny.Admin, r.Deny.Read} {
			for _, p := range ps {
				if !isASCII(p) {
					return false
				}
			}
		}
	}
	return true
}

// modelAllow decides from the configuration itself.
func modelAllow(t *testing.T, cfg Config, id Identity, a Action, name string) bool {
	matchAny := func(ps []string, s string) bool {
		for _, p := range ps {
			if globRegexp(p).MatchString(s) {
				return true
			}
		}
		return false
	}
	var allowed, denied bool
	for _, r := range cfg.Rules {
		m := r.Match
		ok := m.Any ||
			(!m.Verified || id.Verified) &&
				(len(m.CommonName) == 0 || id.Verified && matchAny(m.CommonName, id.CommonName)) &&
				(len(m.SAN) == 0 || id.Verified && slices.ContainsFunc(id.Names, func(n string) bool { return matchAny(m.SAN, n) })) &&
				(len(m.Address) == 0 || slices.ContainsFunc(m.Address, func(p string) bool { return modelContains(t, p, id.Addr) }))
		if !ok {
			continue
		}
		perms := func(p Permissions) []string {
			return [numActions][]string{p.Submit, p.Serve, p.Admin, p.Read}[a]
		}
		allowed = allowed || matchAny(perms(r.Allow), name)
		denied = denied || matchAny(perms(r.Deny), name)
	}
	return allowed && !denied
}

// modelContains reports whether the address rule p ("10.0.0.0/8",
// "192.0.2.7", or an IPv6 form; an IPv4-mapped IPv6 rule means the IPv4
// addresses it covers) covers addr, comparing bits one by one.
func modelContains(t *testing.T, p string, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	p = strings.TrimSpace(p)
	base, bitsText, hasBits := strings.Cut(p, "/")
	ra, err := netip.ParseAddr(base)
	require.NoError(t, err, "an accepted address rule %q", p)
	bits := ra.BitLen()
	if hasBits {
		bits, err = strconv.Atoi(bitsText)
		require.NoError(t, err, "an accepted address rule %q", p)
	}
	if ra.Is4In6() {
		ra, bits = ra.Unmap(), max(bits-96, 0)
	}
	addr = addr.Unmap()
	if ra.Is4() != addr.Is4() {
		return false
	}
	rb, ab := ra.AsSlice(), addr.AsSlice()
	for i := range bits {
		if rb[i/8]>>(7-i%8)&1 != ab[i/8]>>(7-i%8)&1 {
			return false
		}
	}
	return true
}
