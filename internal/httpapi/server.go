// Package httpapi is Gearwork's HTTP front end: a JSON API to submit, look
// up and cancel jobs, Server-Sent Events of a job's progress, long-polling
// HTTP workers, the dashboard (embedded static files), Prometheus metrics
// and health checks. Like the Gearman front end it only translates: every
// job decision is the broker's.
//
// # Job events
//
// The server watches jobs through one broker session (the hub) and keeps a
// bounded log of each watched job's events, so that an SSE client can
// resume with Last-Event-ID and a finished job's result can still be read
// for a while (Config.ResultRetention). Jobs submitted over HTTP are
// watched from their creation; other jobs from the first request for their
// events.
//
// # Security
//
// With no token configured only loopback clients are served, and clients
// that presented a verified certificate (mutual TLS on the listener), and
// everyone with Config.AllowRemote. With tokens, every API request needs
// "Authorization: Bearer <token>" with the scope the route asks for (read,
// submit, work or admin; admin implies the others), whatever certificate
// the client presented. /healthz, /readyz, /openapi.json and the
// dashboard's static files need no token.
//
// TLS is the listener's business (Serve on a crypto/tls listener); the
// server then reads clients' certificates from their connections and
// bounds each handshake by ReadHeaderTimeout.
//
// # Browsers
//
// A page in a browser can reach a server on loopback. The server answers
// only requests whose Host is one of its own (an IP address or localhost
// with its port, or Config.AllowedHosts), which defeats DNS rebinding, and
// refuses requests that change state when a browser marks them as coming
// from another site or origin (except Config.CORSOrigins). The dashboard,
// served from the server's own origin, is not affected.
//
// # Shutdown
//
// Shutdown stops accepting, ends event streams and long polls, waits for
// the other requests up to its context's deadline, and then gives back the
// jobs that HTTP workers still hold. Stop the HTTP server before the broker.
package httpapi

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// Config configures a Server. Only Broker is required.
type Config struct {
	Broker *broker.Broker
	// Version and Commit label the gearwork_build_info metric; empty
	// means "unknown".
	Version, Commit string
	// Lifecycle provides dead letters, pause/resume and retained results.
	// The zero value means the broker's own (BrokerLifecycle); a Lifecycle
	// with a nil field makes the matching routes answer 501 Not
	// Implemented.
	Lifecycle Lifecycle
	// Tokens are the accepted bearer tokens. Empty: no token is needed, but
	// only loopback clients may connect.
	Tokens []Token
	// Rules are the authorization rules of the Gearman port (nil: none).
	// When no token is configured they decide what a client with a
	// verified certificate may do, route by route (route.rule), as for
	// the same identity on the Gearman port; without rules such a client
	// may use every route.
	Rules Authorizer
	// AllowRemote serves clients on other hosts when no token is
	// configured, without a verified client certificate (serve --insecure).
	// False: only loopback clients and clients with a verified certificate.
	AllowRemote bool
	// ReadHeaderTimeout bounds reading a request's header and, on a TLS
	// listener, each connection's handshake (net/http gives the handshake
	// the smallest of its timeouts, and this one is the smallest). Default
	// 10 seconds; it is capped at 2 minutes, the read and write timeouts.
	ReadHeaderTimeout time.Duration
	// CORSOrigins lists the origins allowed to call the API from a browser;
	// "*" allows any. Empty: no CORS headers. Requests that change state
	// from a page of another origin are refused unless its origin is
	// listed here (with "*": never).
	CORSOrigins []string
	// AllowedHosts are the host names, besides IP addresses and
	// "localhost", that requests may name in their Host header (with any
	// port), e.g. the names of the server's certificate or of a reverse
	// proxy in front; "*.example.com" matches one label more; "*" accepts
	// every Host (and so DNS rebinding). Empty: IP addresses and
	// localhost with the server's port only.
	AllowedHosts []string
	// MaxBody is the largest request body in bytes. Default 16 MiB.
	MaxBody int64
	// MaxBatch is the most jobs in one batch submit. Default 10000.
	MaxBatch int
	// MaxLongRequests is the most requests that may stay open at once:
	// event streams, waiting submits and long polls. Past it, an event
	// stream is refused (503 too-many-streams), a waiting submit answers at
	// once (202) and a poll looks once (204 when there is no job), so that
	// such requests cannot hold every connection the server takes (see
	// serve --http-max-connections). 0 means no limit.
	MaxLongRequests int
	// MaxWait caps ?wait= on submits and long polls. Default 5 minutes.
	MaxWait time.Duration
	// DefaultLease is an HTTP worker's lease when the grab names none.
	// Default 5 minutes. MaxLease caps it; default 24 hours.
	DefaultLease, MaxLease time.Duration
	// KeepAlive is the interval of SSE keep-alive comments. Default 15s.
	KeepAlive time.Duration
	// EventLog is the most events kept per job for Last-Event-ID resume.
	// Default 1024; older events are dropped first (the final event is
	// always kept).
	EventLog int
	// MaxFeeds is the most jobs whose events are kept at once. Default
	// 10000. Past it, finished jobs are forgotten oldest first, and jobs
	// submitted over HTTP are watched only from their first event request.
	MaxFeeds int
	// ResultRetention is how long a finished job's final event (and so its
	// result) stays readable. Default 5 minutes.
	ResultRetention time.Duration
	// OverviewInterval is how often the dashboard stream sends an overview.
	// Default 1s.
	OverviewInterval time.Duration
	// ConnState, if set, is told of each change of a connection's state,
	// as http.Server.ConnState (the listener's connection limit takes
	// back idle connections with it).
	ConnState func(net.Conn, http.ConnState)
	// ConnectionsFunc, if set, reports open connections of the other front
	// ends by name (for metrics), e.g. {"gearman": 3}.
	ConnectionsFunc func() map[string]int
	// MetricsMaxFunctions is the most functions /metrics exports series
	// for (selectFunctions says which; a function whose name is not UTF-8 is left out); gearwork_metrics_functions_omitted
	// counts the others. 0 means DefaultMetricsMaxFunctions; below 0, no
	// bound.
	MetricsMaxFunctions int
	// OverviewMaxFunctions is the most functions the dashboard stream's
	// overview carries (selectFunctions says which); its
	// functions_omitted counts the others. 0 means
	// DefaultOverviewMaxFunctions; below 0, no bound.
	OverviewMaxFunctions int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server serves the HTTP API. Create it with New; Serve on a listener;
// Shutdown when done.
type Server struct {
	cfg     Config
	b       *broker.Broker
	life    Lifecycle // cfg.Lifecycle.provided(): no nil part but Results
	log     *slog.Logger
	hub     *hub
	leases  *leases
	handler http.Handler
	mux     *http.ServeMux
	routes  []route
	metrics *metrics
	hosts   *hostPolicy
	srv     *http.Server

	// conns counts open HTTP connections.
	conns atomic.Int64
	// long holds a token for each open long request (longRequest); nil
	// when Config.MaxLongRequests is 0.
	long chan struct{}
	// stop is closed by Shutdown: streams and long polls end.
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	// overview is the last overview event, shared by the dashboard's
	// streams (overviewEvent).
	lastOverview overviewCache
}

// requestTimeout bounds reading a whole request and writing its answer
// (event streams and long polls extend their own write deadline).
const requestTimeout = 2 * time.Minute

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = http.ErrServerClosed

// New returns a Server for cfg. It panics if cfg.Broker is nil. It starts
// a goroutine that expires HTTP worker leases and forgets old job events;
// Shutdown stops it, so every Server must be shut down.
func New(cfg Config) *Server {
	if cfg.Broker == nil {
		panic("httpapi: Config.Broker is nil")
	}
	cfg.MaxBody = cmp.Or(cfg.MaxBody, 16<<20)
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, 10000)
	cfg.MetricsMaxFunctions = cmp.Or(cfg.MetricsMaxFunctions, DefaultMetricsMaxFunctions)
	cfg.OverviewMaxFunctions = cmp.Or(cfg.OverviewMaxFunctions, DefaultOverviewMaxFunctions)
	cfg.MaxWait = cmp.Or(cfg.MaxWait, 5*time.Minute)
	cfg.DefaultLease = cmp.Or(cfg.DefaultLease, 5*time.Minute)
	cfg.MaxLease = cmp.Or(cfg.MaxLease, 24*time.Hour)
	cfg.KeepAlive = cmp.Or(cfg.KeepAlive, 15*time.Second)
	cfg.EventLog = max(cmp.Or(cfg.EventLog, 1024), 2)
	cfg.MaxFeeds = cmp.Or(cfg.MaxFeeds, 10000)
	cfg.ResultRetention = cmp.Or(cfg.ResultRetention, 5*time.Minute)
	cfg.OverviewInterval = cmp.Or(cfg.OverviewInterval, time.Second)
	cfg.ReadHeaderTimeout = min(cmp.Or(cfg.ReadHeaderTimeout, 10*time.Second), requestTimeout)
	if cfg.Lifecycle == (Lifecycle{}) {
		cfg.Lifecycle = BrokerLifecycle(cfg.Broker)
	}
	s := &Server{cfg: cfg, b: cfg.Broker, life: cfg.Lifecycle.provided(), log: cmp.Or(cfg.Logger, slog.Default()),
		stop: make(chan struct{})}
	if cfg.MaxLongRequests > 0 {
		s.long = make(chan struct{}, cfg.MaxLongRequests)
	}
	s.hub = newHub(s.b, cfg.EventLog, cfg.MaxFeeds, cfg.ResultRetention)
	s.leases = newLeases(s.b)
	s.metrics = newMetrics(s)
	s.hosts = newHostPolicy(cfg.AllowedHosts)
	s.routes = s.routeTable()
	s.handler = s.buildHandler()
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       requestTimeout,
		WriteTimeout:      requestTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState: func(c net.Conn, st http.ConnState) {
			if cfg.ConnState != nil {
				cfg.ConnState(c, st)
			}
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Add(-1)
			}
		},
	}
	s.wg.Add(1)
	go s.janitor()
	return s
}

// Handler returns the server's HTTP handler (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTP on ln until Shutdown. It returns ErrServerClosed after
// Shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.hosts.listening(ln.Addr())
	s.srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	return s.srv.Serve(ln)
}

// Shutdown stops accepting connections, ends event streams and long polls,
// waits for other requests to finish (until ctx is done, then closes
// them), gives back jobs that HTTP workers hold and ends the hub session.
// Safe to call twice, and before Serve.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		close(s.stop)
		err = s.srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = s.srv.Close()
		}
		s.wg.Wait()
		s.leases.closeAll()
		s.hub.close()
	})
	return err
}

// janitor expires HTTP worker leases and forgets old job feeds.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.leases.expire(now)
			s.hub.sweep(now)
		}
	}
}

// DefaultOverviewMaxFunctions is Config.OverviewMaxFunctions's default:
// as many rows as the dashboard's table usefully shows every second.
const DefaultOverviewMaxFunctions = 200
