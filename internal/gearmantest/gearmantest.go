// Package gearmantest starts Gearman job servers for tests and examples:
// Gearwork's own, in process, and Debian's C gearmand as a child process.
// Both listen on a free loopback port and are stopped by the test. It also
// starts Go clients and workers of them, set up for tests.
package gearmantest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmanapi"
)

// Server is an in-process Gearwork server with an in-memory store.
type Server struct {
	addr string
	mu   sync.Mutex
	b    *broker.Broker
	api  *gearmanapi.Server
	done chan error
}

// NewServer starts a server on addr ("127.0.0.1:0" picks a free port).
// Close it when done.
func NewServer(addr string) (*Server, error) {
	s := &Server{}
	if err := s.start(addr); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts a server on a free loopback port and closes it when the test
// ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := NewServer("127.0.0.1:0")
	if err != nil {
		tb.Fatalf("gearmantest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	b := broker.New(broker.Config{HandlePrefix: "H:test:", Logger: quiet})
	if err := b.Start(context.Background()); err != nil {
		ln.Close()
		return err
	}
	api := gearmanapi.New(gearmanapi.Config{Broker: b, Logger: quiet, Version: "gearwork-test"})
	done := make(chan error, 1)
	go func() { done <- api.Serve(context.Background(), ln) }()
	s.mu.Lock()
	s.addr, s.b, s.api, s.done = ln.Addr().String(), b, api, done
	s.mu.Unlock()
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Broker returns the running broker, for tests that inspect its state.
func (s *Server) Broker() *broker.Broker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

// Close stops the server: its listener and every connection close, and all
// jobs are lost. Safe to call twice.
func (s *Server) Close() {
	s.mu.Lock()
	api, b, done := s.api, s.b, s.done
	s.api, s.done = nil, nil
	s.mu.Unlock()
	if api == nil {
		return
	}
	api.Close()
	<-done
	b.Stop()
}

// Restart closes the server and starts a new, empty one on the same
// address.
func (s *Server) Restart() error {
	s.Close()
	var err error
	// The port was just released; binding it again can fail briefly.
	for range 50 {
		if err = s.start(s.Addr()); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}
