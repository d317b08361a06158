package auth

import (
	"fmt"
	"strings"
)

// glob is a compiled pattern over function or admin command names: '*'
// matches any run of bytes (including none), '?' matches exactly one byte,
// every other byte matches itself. There is no escape: a name containing
// '*' or '?' can only be matched by a wildcard.
type glob struct {
	pattern string
	// literal is set when the pattern has no wildcard, so matching is a
	// plain comparison.
	literal bool
	// any is set for "*", which matches every name.
	any bool
}

// maxPatternSize bounds a pattern; a function name is at most 511 bytes, so
// a longer pattern could never match more than a shorter one.
const maxPatternSize = 1024

func compileGlob(p string) (glob, error) {
	switch {
	case p == "":
		return glob{}, fmt.Errorf("empty pattern")
	case len(p) > maxPatternSize:
		return glob{}, fmt.Errorf("pattern of %d bytes exceeds %d bytes", len(p), maxPatternSize)
	case strings.IndexByte(p, 0) >= 0:
		return glob{}, fmt.Errorf("pattern %q contains a NUL byte", p)
	}
	return glob{
		pattern: p,
		literal: !strings.ContainsAny(p, "*?"),
		any:     strings.Trim(p, "*") == "",
	}, nil
}

// match reports whether name matches the pattern. It runs in O(len(pattern)
// * len(name)) time at worst, without recursion, so hostile names cannot
// make it blow up.
func (g glob) match(name string) bool {
	switch {
	case g.any:
		return true
	case g.literal:
		return g.pattern == name
	}
	return globMatch(g.pattern, name)
}

// globMatch is the classic greedy matcher: on a mismatch it backtracks only
// to the most recent '*', letting it absorb one more byte.
func globMatch(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// globs is a list of patterns; it matches a name when any pattern does.
type globs []glob

func compileGlobs(field string, ps []string) (globs, error) {
	out := make(globs, 0, len(ps))
	for _, p := range ps {
		g, err := compileGlob(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		out = append(out, g)
	}
	return out, nil
}

func (gs globs) match(name string) bool {
	for _, g := range gs {
		if g.match(name) {
			return true
		}
	}
	return false
}
