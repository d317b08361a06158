package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Browsers can reach a server on loopback from any page they show, and a
// host name that an attacker's DNS resolves to 127.0.0.1 makes the
// attacker's page same-origin with it (DNS rebinding). Two checks, in
// front of every route, keep pages of other sites out:
//
//   - The Host header must be one the server answers to: an IP address
//     or "localhost" with one of the server's ports (the port of a
//     listener given to Serve; any port before Serve, as with Handler in
//     tests), or a name of Config.AllowedHosts. A rebound name is none of
//     these, so a page that got the server through DNS rebinding reads
//     and changes nothing. Otherwise: 421 Misdirected Request.
//   - A request that may change state (every method but GET, HEAD and
//     OPTIONS) must not be one a browser marks as coming from another
//     site or origin: Sec-Fetch-Site cross-site or same-site, or, from
//     browsers that do not send Sec-Fetch-Site, an Origin whose host is
//     not the request's Host. net/http's CrossOriginProtection decides;
//     Config.CORSOrigins are trusted. Otherwise: 403 Forbidden. Requests
//     without either header (curl, client libraries) are not browsers'
//     and pass.

// hostPolicy decides which Host headers the server answers to.
type hostPolicy struct {
	// names are AllowedHosts in lower case, without a trailing dot.
	names []string
	// any is set when AllowedHosts holds "*": every Host is accepted.
	any bool
	// mu guards ports.
	mu sync.RWMutex
	// ports are the ports of the listeners given to Serve; empty until
	// the first, when every port is accepted.
	ports []string
}

func newHostPolicy(allowed []string) *hostPolicy {
	hp := &hostPolicy{}
	for _, n := range allowed {
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		switch n {
		case "":
		case "*":
			hp.any = true
		default:
			hp.names = append(hp.names, n)
		}
	}
	return hp
}

// listening records the port of a listener the server serves on.
func (hp *hostPolicy) listening(addr net.Addr) {
	_, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return
	}
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if !slices.Contains(hp.ports, port) {
		hp.ports = append(hp.ports, port)
	}
}

// allows reports whether the server answers to the Host header host of a
// request that came over TLS or not.
func (hp *hostPolicy) allows(host string, overTLS bool) bool {
	if hp.any {
		return true
	}
	name, port, err := net.SplitHostPort(host)
	if err != nil {
		// No port: the scheme's default.
		name, port = host, "80"
		if overTLS {
			port = "443"
		}
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	for _, n := range hp.names {
		if n == name {
			return true
		}
		// "*.example.com" matches one label more, as in certificates.
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			if label, parent, found := strings.Cut(name, "."); found && label != "" && parent == rest {
				return true
			}
		}
	}
	if _, err := netip.ParseAddr(name); err != nil && name != "localhost" {
		return false
	}
	hp.mu.RLock()
	defer hp.mu.RUnlock()
	return len(hp.ports) == 0 || slices.Contains(hp.ports, port)
}

// newCrossOrigin returns the cross-origin check, trusting origins (CORS
// origins); nil when origins holds "*", which trusts every page.
func (s *Server) newCrossOrigin(origins []string) *http.CrossOriginProtection {
	if slices.Contains(origins, "*") {
		return nil
	}
	cop := http.NewCrossOriginProtection()
	for _, o := range origins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			s.log.Error("httpapi: ignoring a CORS origin that is not scheme://host[:port]", "origin", o, "error", err.Error())
		}
	}
	return cop
}

// browserChecks refuses requests for a Host the server does not answer to
// and state-changing requests from other sites' pages.
func (s *Server) browserChecks(next http.Handler) http.Handler {
	cop := s.newCrossOrigin(s.cfg.CORSOrigins)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts.allows(r.Host, r.TLS != nil) {
			s.log.DebugContext(r.Context(), "httpapi: refused a request for an unknown host",
				"host", r.Host, "remote", r.RemoteAddr)
			writeProblem(w, r, errorf(http.StatusMisdirectedRequest, "unknown-host",
				"this server does not answer to the host %q: it answers to its IP addresses and localhost with its port, "+
					"and to the names given with --http-allowed-hosts", r.Host))
			return
		}
		if cop != nil {
			if err := cop.Check(r); err != nil {
				s.log.DebugContext(r.Context(), "httpapi: refused a cross-origin request", "method", r.Method,
					"path", r.URL.Path, "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
				writeProblem(w, r, errorf(http.StatusForbidden, "cross-origin",
					"%s %s came from a page of another site (Origin %q, Sec-Fetch-Site %q); requests that change state "+
						"are accepted from the dashboard's own origin, from clients that are not browsers, "+
						"and from the origins given with --http-cors", r.Method, r.URL.Path,
					r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site")))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
