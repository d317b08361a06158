// Package serverdial holds the connection settings that the client and
// worker libraries share: the checked list of job servers, how to dial
// them, and the timeouts, backoffs and buffer sizes of their connections,
// with one set of defaults.
//
// API is not stable: this package is internal to Gearwork.
package serverdial

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Settings are the connection settings of a client or worker. The client
// and worker Config types document each field and its default.
type Settings struct {
	Servers                                           []string
	DialFunc                                          func(ctx context.Context, network, addr string) (net.Conn, error)
	DialTimeout, WriteTimeout, MinBackoff, MaxBackoff time.Duration
	ReadBuffer                                        int
}

// WithDefaults returns s with every unset field at its default: a 5s dial
// timeout, a 30s write timeout, backoffs
// from 100ms to 10s (MaxBackoff at least MinBackoff), a 64 KiB read buffer
// and a net.Dialer with TCP keep-alives. It returns an error, prefixed
// with who ("client", "worker"), for an empty server list and for a server
// address that is not host:port or is listed twice.
func (s Settings) WithDefaults(who string) (Settings, error) {
	if len(s.Servers) == 0 {
		return Settings{}, fmt.Errorf("%s: no server", who)
	}
	seen := map[string]bool{}
	for _, a := range s.Servers {
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			return Settings{}, fmt.Errorf("%s: server address %q: %w", who, a, err)
		}
		if !validPort(port) {
			return Settings{}, fmt.Errorf("%s: server address %q: port %q: use 1 to 65535 (or a service name)", who, a, port)
		}
		if seen[a] {
			return Settings{}, fmt.Errorf("%s: server %q listed twice", who, a)
		}
		seen[a] = true
	}
	s.DialTimeout = cmp.Or(s.DialTimeout, 5*time.Second)
	s.WriteTimeout = cmp.Or(s.WriteTimeout, 30*time.Second)
	s.MinBackoff = cmp.Or(s.MinBackoff, 100*time.Millisecond)
	s.MaxBackoff = max(cmp.Or(s.MaxBackoff, 10*time.Second), s.MinBackoff)
	s.ReadBuffer = cmp.Or(s.ReadBuffer, 64<<10)
	if s.DialFunc == nil {
		d := &net.Dialer{Timeout: s.DialTimeout, KeepAlive: 30 * time.Second}
		s.DialFunc = d.DialContext
	}
	return s, nil
}

// validPort reports whether port is a TCP port number from 1 to 65535, or
// a service name for the resolver to look up.
func validPort(port string) bool {
	if port == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		c := port[0] | 0x20 // a service name starts with a letter
		return c >= 'a' && c <= 'z'
	}
	return n >= 1 && n <= 65535
}
