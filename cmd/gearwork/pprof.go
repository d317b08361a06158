package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startPprof serves Go's profiling endpoints (/debug/pprof/...) on ln,
// for finding where the server spends its time:
//
//	go tool pprof -top http://ADDR/debug/pprof/profile?seconds=10
//
// It is a debugging aid, off by default; anyone who reaches addr can read
// profiles, so keep it on loopback. The returned function stops it and
// closes ln.
func startPprof(ln net.Listener, log *slog.Logger) func() {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve: pprof listener failed", slog.String("error", err.Error()))
		}
	}()
	log.Info("serve: profiling endpoints", slog.String("addr", ln.Addr().String()))
	return func() {
		srv.Close()
		<-done
	}
}
