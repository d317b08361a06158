package auth

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/netip"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func mustPolicy(t *testing.T, cfg Config) *Policy {
	t.Helper()
	p, err := New(cfg)
	require.NoError(t, err)
	return p
}

// allowRule is a policy of one rule: identities that match m get allow.
func allowRule(t *testing.T, m MatchConfig, allow Permissions) *Policy {
	t.Helper()
	return mustPolicy(t, Config{Rules: []RuleConfig{{Match: m, Allow: allow}}})
}

func verified(cn string, names ...string) Identity {
	return Identity{Addr: netip.MustParseAddr("10.9.9.9"), Verified: true, CommonName: cn, Names: names}
}

func fromAddr(a string) Identity { return Identity{Addr: netip.MustParseAddr(a)} }

func TestAllowSubmitByCommonNameGlob(t *testing.T) {
	t.Parallel()
	p := allowRule(t, MatchConfig{CommonName: []string{"web-*"}},
		Permissions{Submit: []string{"email.*", "resize"}})
	require.True(t, p.Allow(verified("web-1"), ActionSubmit, "email.send"))
	require.True(t, p.Allow(verified("web-1"), ActionSubmit, "resize"))
	require.False(t, p.Allow(verified("web-1"), ActionSubmit, "resize2"), "literal pattern matches exactly")
	require.False(t, p.Allow(verified("web-1"), ActionSubmit, "billing"))
	require.False(t, p.Allow(verified("web-1"), ActionServe, "email.send"), "submit does not imply serve")
	require.False(t, p.Allow(verified("web-1"), ActionAdmin, "cancel job"))
	require.False(t, p.Allow(verified("worker-1"), ActionSubmit, "email.send"), "other CN")
}

func TestUnverifiedCertificateNamesNeverMatch(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, Config{Rules: []RuleConfig{
		{Match: MatchConfig{CommonName: []string{"*"}}, Allow: Permissions{Submit: []string{"*"}}},
		{Match: MatchConfig{SAN: []string{"*"}}, Allow: Permissions{Serve: []string{"*"}}},
		{Match: MatchConfig{Verified: true}, Allow: Permissions{Admin: []string{"*"}}},
	}})
	forged := Identity{Addr: netip.MustParseAddr("10.0.0.1"), CommonName: "web-1", Names: []string{"a.example"}}
	for a := range numActions {
		require.False(t, p.Allow(forged, a, "x"), "action %s", a)
	}
	require.True(t, p.Allow(verified("", "a.example"), ActionServe, "x"))
	require.True(t, p.Allow(verified("anything"), ActionAdmin, "shutdown"))
}

func TestAllowServeBySAN(t *testing.T) {
	t.Parallel()
	p := allowRule(t, MatchConfig{SAN: []string{"*.workers.internal", "spiffe://prod/*"}},
		Permissions{Serve: []string{"*"}})
	require.True(t, p.Allow(verified("w", "other.example", "w1.workers.internal"), ActionServe, "resize"))
	require.True(t, p.Allow(verified("w", "spiffe://prod/resizer"), ActionServe, "resize"))
	require.False(t, p.Allow(verified("w", "w1.workers.internal.evil"), ActionServe, "resize"))
	require.False(t, p.Allow(verified("w1.workers.internal"), ActionServe, "resize"), "the CN is not a SAN")
}

func TestAddressRules(t *testing.T) {
	t.Parallel()
	p := allowRule(t, MatchConfig{Address: []string{"10.1.0.0/16", "192.0.2.7", "2001:db8::/32"}},
		Permissions{Submit: []string{"*"}})
	require.True(t, p.Allow(fromAddr("10.1.200.3"), ActionSubmit, "f"))
	require.True(t, p.Allow(fromAddr("192.0.2.7"), ActionSubmit, "f"))
	require.True(t, p.Allow(fromAddr("2001:db8::1"), ActionSubmit, "f"))
	require.True(t, p.Allow(fromAddr("::ffff:10.1.0.1"), ActionSubmit, "f"), "IPv4-mapped IPv6 is the IPv4 address")
	require.False(t, p.Allow(fromAddr("10.2.0.1"), ActionSubmit, "f"))
	require.False(t, p.Allow(fromAddr("192.0.2.8"), ActionSubmit, "f"))
	require.False(t, p.Allow(Identity{}, ActionSubmit, "f"), "unknown address matches no address rule")
}

func TestMatchFieldsAreAnded(t *testing.T) {
	t.Parallel()
	p := allowRule(t, MatchConfig{CommonName: []string{"ops-*"}, Address: []string{"10.0.0.0/8"}},
		Permissions{Admin: []string{"*"}})
	id := verified("ops-alice")
	require.True(t, p.Allow(id, ActionAdmin, "shutdown"))
	id.Addr = netip.MustParseAddr("203.0.113.5")
	require.False(t, p.Allow(id, ActionAdmin, "shutdown"), "right CN from the wrong network")
}

func TestDenyWinsOverAllow(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, Config{Rules: []RuleConfig{
		{Match: MatchConfig{Any: true}, Allow: Permissions{Submit: []string{"*"}, Serve: []string{"*"}}},
		{Match: MatchConfig{Address: []string{"10.0.0.0/8"}}, Deny: Permissions{Submit: []string{"billing.*"}}},
		{Match: MatchConfig{CommonName: []string{"billing"}}, Allow: Permissions{Submit: []string{"billing.charge"}}},
	}})
	require.True(t, p.Allow(fromAddr("10.0.0.1"), ActionSubmit, "email"))
	require.False(t, p.Allow(fromAddr("10.0.0.1"), ActionSubmit, "billing.charge"))
	require.False(t, p.Allow(verified("billing"), ActionSubmit, "billing.charge"), "a deny from another matching rule wins")
	require.True(t, p.Allow(fromAddr("192.0.2.1"), ActionSubmit, "billing.charge"), "the deny rule does not match")
}

func TestAdminCommandsByName(t *testing.T) {
	t.Parallel()
	p := allowRule(t, MatchConfig{CommonName: []string{"oncall"}},
		Permissions{Admin: []string{"cancel job", "maxqueue"}})
	for cmd, allowed := range map[string]bool{"cancel job": true, "maxqueue": true, "shutdown": false, "drop function": false} {
		require.Equal(t, allowed, p.Allow(verified("oncall"), ActionAdmin, cmd), cmd)
	}
}

func TestGrantAny(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, Config{Rules: []RuleConfig{
		{Match: MatchConfig{Address: []string{"127.0.0.1"}}, Allow: Permissions{Serve: []string{"x"}}},
		{Match: MatchConfig{Any: true}, Deny: Permissions{Submit: []string{"*"}}},
	}})
	require.True(t, p.Grant(fromAddr("127.0.0.1")).Any())
	require.False(t, p.Grant(fromAddr("127.0.0.2")).Any(), "a deny alone grants nothing")
	var zero Grant
	require.False(t, zero.Any())
	require.False(t, zero.Allow(ActionSubmit, "x"))
	require.False(t, zero.Allow(Action(200), "x"), "unknown action")
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"no rules":      {Config{}, "no rules"},
		"empty match":   {Config{Rules: []RuleConfig{{Name: "r", Allow: Permissions{Submit: []string{"*"}}}}}, `rule 1 ("r"): match: empty`},
		"bad cidr":      {Config{Rules: []RuleConfig{{Match: MatchConfig{Address: []string{"10.0.0.0/40"}}}}}, "match.address: invalid CIDR"},
		"bad address":   {Config{Rules: []RuleConfig{{Match: MatchConfig{Address: []string{"host.example"}}}}}, "invalid address"},
		"empty pattern": {Config{Rules: []RuleConfig{{Match: MatchConfig{Any: true}, Deny: Permissions{Serve: []string{""}}}}}, "deny.serve: empty pattern"},
		"nul pattern":   {Config{Rules: []RuleConfig{{Match: MatchConfig{CommonName: []string{"a\x00"}}}}}, "match.cn"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestFromConn(t *testing.T) {
	t.Parallel()
	tcp := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 4730}
	id := FromConn(tcp, nil)
	require.Equal(t, Identity{Addr: netip.MustParseAddr("192.0.2.1")}, id)
	require.Equal(t, "addr=192.0.2.1", id.String())

	u, _ := url.Parse("spiffe://prod/worker")
	leaf := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "worker-1"},
		DNSNames:       []string{"w1.internal"},
		EmailAddresses: []string{"ops@example.com"},
		URIs:           []*url.URL{u},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
	}
	unverified := FromConn(tcp, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
	require.False(t, unverified.Verified)
	require.Empty(t, unverified.CommonName)

	v := FromConn(tcp, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf},
		VerifiedChains: [][]*x509.Certificate{{leaf}}})
	require.True(t, v.Verified)
	require.Equal(t, "worker-1", v.CommonName)
	require.Equal(t, []string{"w1.internal", "ops@example.com", "spiffe://prod/worker", "10.0.0.1"}, v.Names)
	require.Equal(t, "cn=worker-1 addr=192.0.2.1", v.String())
	require.Equal(t, "addr=unknown", FromConn(nil, nil).String())
}

func TestGlob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "anything", true}, {"**", "x", true},
		{"a*", "a", true}, {"a*", "abc", true}, {"a*", "ba", false},
		{"*.send", "email.send", true}, {"*.send", "email.sendx", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"a?c", "abbc", false},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false},
		{"*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"exact", "exact", true}, {"exact", "exac", false},
	} {
		g, err := compileGlob(tc.p)
		require.NoError(t, err)
		require.Equal(t, tc.want, g.match(tc.s), "%q ~ %q", tc.p, tc.s)
	}
}

func TestReadIsItsOwnGrant(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, Config{Rules: []RuleConfig{
		{Match: MatchConfig{CommonName: []string{"ops"}}, Allow: Permissions{Admin: []string{"*"}, Submit: []string{"*"}}},
		{Match: MatchConfig{CommonName: []string{"auditor"}}, Allow: Permissions{Read: []string{"billing.*"}}, Deny: Permissions{Read: []string{"billing.cards"}}},
	}})
	require.False(t, p.Allow(verified("ops"), ActionRead, "billing.invoice"), "admin does not imply read")
	require.True(t, p.Allow(verified("auditor"), ActionRead, "billing.invoice"))
	require.False(t, p.Allow(verified("auditor"), ActionRead, "billing.cards"), "deny wins")
	require.False(t, p.Allow(verified("auditor"), ActionRead, "email"))
	require.False(t, p.Allow(verified("auditor"), ActionAdmin, "result"), "read does not imply admin")
	require.True(t, p.Grant(verified("auditor")).Any())
	require.Equal(t, "read", ActionRead.String())
}

func TestGrantEvery(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, Config{Rules: []RuleConfig{
		{Match: MatchConfig{CommonName: []string{"ops-*"}}, Allow: Permissions{Read: []string{"*"}, Submit: []string{"**"}}},
		{Match: MatchConfig{CommonName: []string{"ops-2"}}, Deny: Permissions{Read: []string{"billing"}}},
		{Match: MatchConfig{CommonName: []string{"web-*"}}, Allow: Permissions{Submit: []string{"email.*", "*x"}, Read: []string{"email.*"}}},
	}})
	ops := p.Grant(verified("ops-1"))
	require.True(t, ops.Every(ActionRead))
	require.True(t, ops.Every(ActionSubmit), "** matches every name")
	require.False(t, ops.Every(ActionAdmin))
	require.False(t, p.Grant(verified("ops-2")).Every(ActionRead), "a deny leaves some name out")
	web := p.Grant(verified("web-1"))
	require.False(t, web.Every(ActionSubmit), "patterns that match many names are not every name")
	require.False(t, web.Every(ActionRead))
	require.False(t, (&Grant{}).Every(ActionRead))
	require.False(t, ops.Every(numActions))
}
