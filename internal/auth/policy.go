package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Action is something an identity may be allowed to do.
type Action uint8

// The actions that rules grant or deny. Each is checked against a name: a
// function name for ActionSubmit, ActionServe and ActionRead, an admin
// command name (such as "cancel job" or "shutdown") for ActionAdmin.
const (
	// ActionSubmit is submitting a job to a function (SUBMIT_JOB and its
	// variants).
	ActionSubmit Action = iota
	// ActionServe is registering as a worker of a function (CAN_DO,
	// CAN_DO_TIMEOUT).
	ActionServe
	// ActionAdmin is running an admin command that changes state.
	// Admin commands that change nothing are not checked against it.
	ActionAdmin
	// ActionRead is reading what jobs of a function carry that may be
	// private: payloads, results and error texts (the "result",
	// "deadletters" and "deadletter show" admin commands). Counts,
	// function names, handles and unique ids are not checked against it.
	ActionRead
	numActions
)

// String returns the action's name as written in the configuration:
// "submit", "serve", "admin" or "read".
func (a Action) String() string {
	switch a {
	case ActionSubmit:
		return "submit"
	case ActionServe:
		return "serve"
	case ActionAdmin:
		return "admin"
	case ActionRead:
		return "read"
	}
	return fmt.Sprintf("Action(%d)", a)
}

// Config is the "auth:" section of the configuration file: a list of
// rules. The zero Config has no rules; New rejects it, since a policy
// without rules would deny everything.
type Config struct {
	// Rules are evaluated together: an identity may do what any rule that
	// matches it allows, unless a rule that matches it denies it. Order
	// does not matter. What no matching rule allows is denied.
	Rules []RuleConfig `yaml:"rules" json:"rules"`
}

// RuleConfig grants or denies actions to the identities it matches.
type RuleConfig struct {
	// Name labels the rule in error messages; optional.
	Name string `yaml:"name" json:"name"`
	// Match selects the identities the rule applies to; required.
	Match MatchConfig `yaml:"match" json:"match"`
	// Allow lists, per action, the names the matched identities may use.
	Allow Permissions `yaml:"allow" json:"allow"`
	// Deny lists, per action, names the matched identities may not use,
	// even if another rule allows them.
	Deny Permissions `yaml:"deny" json:"deny"`
}

// MatchConfig selects identities. Every field that is set must match (they
// are and-ed); within a list, any entry may match. At least one field must
// be set: use Any to match everyone explicitly.
type MatchConfig struct {
	// Any matches every identity, including connections without a
	// certificate from any address.
	Any bool `yaml:"any" json:"any"`
	// Verified matches identities with a verified client certificate.
	Verified bool `yaml:"verified" json:"verified"`
	// CommonName are glob patterns over the verified certificate's subject
	// common name ('*' any run, '?' one byte).
	CommonName []string `yaml:"cn" json:"cn"`
	// SAN are glob patterns over the verified certificate's subject
	// alternative names (DNS, e-mail, URI, IP); one matching name suffices.
	SAN []string `yaml:"san" json:"san"`
	// Address are source addresses in CIDR notation ("10.0.0.0/8") or
	// single IPs ("192.0.2.7").
	Address []string `yaml:"address" json:"address"`
}

// Permissions lists glob patterns per action.
type Permissions struct {
	// Submit are patterns over function names that may (or may not) be
	// submitted to.
	Submit []string `yaml:"submit" json:"submit"`
	// Serve are patterns over function names that may (or may not) be
	// served with CAN_DO.
	Serve []string `yaml:"serve" json:"serve"`
	// Admin are patterns over the names of the admin commands that change
	// state ("cancel job", "pause", "deadletter retry", "shutdown", ...;
	// docs/protocol.md lists them), or "*" for all of them.
	Admin []string `yaml:"admin" json:"admin"`
	// Read are patterns over function names whose jobs' payloads, results
	// and error texts may (or may not) be read through admin commands.
	Read []string `yaml:"read" json:"read"`
}

// Policy decides what identities may do. Create it with New; it is
// immutable and safe for concurrent use.
type Policy struct {
	rules []rule
}

type rule struct {
	name        string
	any         bool
	verified    bool
	cn          globs
	san         globs
	addrs       []netip.Prefix
	allow, deny [numActions]globs
}

// ErrNoRules is returned by New for a Config without rules.
var ErrNoRules = errors.New("auth: no rules: a policy without rules would deny everything")

// New compiles cfg. It returns an error that names the offending rule and
// field for an invalid pattern or address, or a rule without a match.
func New(cfg Config) (*Policy, error) {
	if len(cfg.Rules) == 0 {
		return nil, ErrNoRules
	}
	p := &Policy{rules: make([]rule, 0, len(cfg.Rules))}
	for i, rc := range cfg.Rules {
		r, err := compileRule(rc)
		if err != nil {
			label := fmt.Sprintf("rule %d", i+1)
			if rc.Name != "" {
				label += fmt.Sprintf(" (%q)", rc.Name)
			}
			return nil, fmt.Errorf("auth: %s: %w", label, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func compileRule(rc RuleConfig) (rule, error) {
	m := rc.Match
	r := rule{name: rc.Name, any: m.Any, verified: m.Verified}
	if !m.Any && !m.Verified && len(m.CommonName) == 0 && len(m.SAN) == 0 && len(m.Address) == 0 {
		return rule{}, errors.New("match: empty; set any, verified, cn, san or address")
	}
	var err error
	if r.cn, err = compileGlobs("match.cn", m.CommonName); err != nil {
		return rule{}, err
	}
	if r.san, err = compileGlobs("match.san", m.SAN); err != nil {
		return rule{}, err
	}
	for _, a := range m.Address {
		pfx, err := parsePrefix(a)
		if err != nil {
			return rule{}, fmt.Errorf("match.address: %w", err)
		}
		r.addrs = append(r.addrs, pfx)
	}
	for _, side := range []struct {
		name string
		p    Permissions
		dst  *[numActions]globs
	}{{"allow", rc.Allow, &r.allow}, {"deny", rc.Deny, &r.deny}} {
		for a, ps := range [numActions][]string{side.p.Submit, side.p.Serve, side.p.Admin, side.p.Read} {
			if side.dst[a], err = compileGlobs(side.name+"."+Action(a).String(), ps); err != nil {
				return rule{}, err
			}
		}
	}
	return r, nil
}

// parsePrefix accepts "10.0.0.0/8" or a single address "192.0.2.7".
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q: %w", s, err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (r *rule) matches(id Identity) bool {
	if r.any {
		return true
	}
	if r.verified && !id.Verified {
		return false
	}
	if len(r.cn) > 0 && (!id.Verified || !r.cn.match(id.CommonName)) {
		return false
	}
	if len(r.san) > 0 {
		if !id.Verified {
			return false
		}
		found := false
		for _, n := range id.Names {
			if r.san.match(n) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if len(r.addrs) > 0 {
		if !id.Addr.IsValid() {
			return false
		}
		a := id.Addr.Unmap()
		found := false
		for _, p := range r.addrs {
			if p.Contains(a) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Grant returns the permissions of id: the union of what the rules that
// match id allow, less what any of them denies. The result is immutable
// and safe for concurrent use; a front end computes it once per
// connection.
func (p *Policy) Grant(id Identity) *Grant {
	g := &Grant{}
	for i := range p.rules {
		r := &p.rules[i]
		if !r.matches(id) {
			continue
		}
		for a := range numActions {
			g.allow[a] = append(g.allow[a], r.allow[a]...)
			g.deny[a] = append(g.deny[a], r.deny[a]...)
		}
	}
	return g
}

// Allow reports whether id may perform action a on name. It is Grant(id)
// followed by Grant.Allow; front ends that check many requests of one
// identity should keep the Grant.
func (p *Policy) Allow(id Identity, a Action, name string) bool {
	return p.Grant(id).Allow(a, name)
}

// Grant is what one identity may do. The zero Grant allows nothing.
type Grant struct {
	allow, deny [numActions]globs
}

// Allow reports whether action a on name is allowed: some allow pattern
// matches and no deny pattern does.
func (g *Grant) Allow(a Action, name string) bool {
	if a >= numActions {
		return false
	}
	return g.allow[a].match(name) && !g.deny[a].match(name)
}

// Some reports whether the grant allows action a on some name.
func (g *Grant) Some(a Action) bool {
	return a < numActions && len(g.allow[a]) > 0
}

// Every reports whether the grant allows action a on every name: an allow
// pattern matches any name ("*") and no deny pattern limits it. A front
// end whose request reaches functions it cannot name beforehand (a list
// of every function's jobs, a batch of jobs for several functions) needs
// it from an identity that the rules decide for.
func (g *Grant) Every(a Action) bool {
	if a >= numActions || len(g.deny[a]) > 0 {
		return false
	}
	for _, p := range g.allow[a] {
		if p.any {
			return true
		}
	}
	return false
}

// Any reports whether the grant allows anything at all. Connections whose
// grant allows nothing are treated as unauthenticated (see the front end's
// smaller packet limit).
func (g *Grant) Any() bool {
	for a := range numActions {
		if len(g.allow[a]) > 0 {
			return true
		}
	}
	return false
}

// Len returns the number of rules.
func (p *Policy) Len() int { return len(p.rules) }
