package httpapi

import (
	"net"
	"net/http"
	"net/netip"

	"github.com/gearwork/gearwork/internal/auth"
)

// Authorizer gives the permissions of an identity: the authorization
// rules of the Gearman port (*auth.Policy), which also decide for clients
// of the HTTP port that present a verified certificate when no token is
// configured (see Config.Rules).
type Authorizer interface {
	Grant(id auth.Identity) *auth.Grant
}

var _ Authorizer = (*auth.Policy)(nil)

// ruleNeed is what a route needs from the grant of a client that the
// rules decide for: the action and the name it is checked against, with
// ok false when the grant does not allow it.
type ruleNeed func(g *auth.Grant, r *http.Request) (what string, ok bool)

// Rule checks, by the kind of route.
var (
	// ruleOpen: what the Gearman port shows every connection (function
	// names, counts and workers: "status", "workers", /metrics).
	ruleOpen ruleNeed = func(*auth.Grant, *http.Request) (string, bool) { return "", true }
	// ruleReadEvery: the answer may hold payloads, results or error texts
	// of any function's jobs, so it needs read on every function.
	ruleReadEvery ruleNeed = func(g *auth.Grant, _ *http.Request) (string, bool) {
		return "read every function", g.Every(auth.ActionRead)
	}
	// ruleSubmitEvery: the body names the functions (several jobs, a
	// batch's callbacks), so it needs submit on every function.
	ruleSubmitEvery ruleNeed = func(g *auth.Grant, _ *http.Request) (string, bool) {
		return "submit to every function", g.Every(auth.ActionSubmit)
	}
	// ruleSubmitFunction: a submit to the path's function, as SUBMIT_JOB;
	// one that joins a batch needs submit on every function, since the
	// batch's callbacks are submits too (on the Gearman port the submit
	// needs them).
	ruleSubmitFunction ruleNeed = func(g *auth.Grant, r *http.Request) (string, bool) {
		if option(r, "Batch") != "" {
			return "submit to every function (to join a batch)", g.Every(auth.ActionSubmit)
		}
		fn := r.PathValue("fn")
		return "submit to " + fn, g.Allow(auth.ActionSubmit, fn)
	}
	// ruleServeFunction: grabbing a job of the path's function, as CAN_DO.
	ruleServeFunction ruleNeed = func(g *auth.Grant, r *http.Request) (string, bool) {
		fn := r.PathValue("fn")
		return "serve " + fn, g.Allow(auth.ActionServe, fn)
	}
	// ruleServeSome: reporting on a job the client holds: its lease,
	// given only to the grab, says which.
	ruleServeSome ruleNeed = func(g *auth.Grant, _ *http.Request) (string, bool) {
		return "serve some function", g.Some(auth.ActionServe)
	}
)

// ruleAdminEvery: an administrator's route without an admin command of
// the same meaning on the Gearman port needs every admin command.
var ruleAdminEvery ruleNeed = func(g *auth.Grant, _ *http.Request) (string, bool) {
	return "run every admin command", g.Every(auth.ActionAdmin)
}

// ruleAdmin: the route does what the admin command name does on the
// Gearman port, and needs what it needs.
func ruleAdmin(name string) ruleNeed {
	return func(g *auth.Grant, _ *http.Request) (string, bool) {
		return "run " + name, g.Allow(auth.ActionAdmin, name)
	}
}

// authorizeByRules decides for a client with a verified certificate when
// the server has rules and no tokens: the rules grant its identity (the
// certificate's names and the source address) what they grant it on the
// Gearman port, route by route (route.rule; a route without one is
// refused). Without this a certificate
// the rules limit to a few functions could do everything over HTTP.
func (s *Server) authorizeByRules(r *http.Request, rt route) error {
	id := requestIdentity(r)
	what, ok := "use "+rt.method+" "+rt.pattern, false
	if rt.rule != nil {
		what, ok = rt.rule(s.cfg.Rules.Grant(id), r)
	}
	if ok {
		return nil
	}
	return errorf(http.StatusForbidden, "forbidden",
		"%s may not %s: the authorization rules of --config decide for clients with a certificate when no token is configured",
		id, what)
}

// requestIdentity is the identity of the request's client, as the
// Gearman port sees a connection's (auth.FromConn).
func requestIdentity(r *http.Request) auth.Identity {
	var addr net.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		addr = net.TCPAddrFromAddrPort(ap)
	}
	return auth.FromConn(addr, r.TLS)
}
