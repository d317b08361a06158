//go:build !linux

package gearmanapi

import (
	"context"
	"log/slog"
)

// parker would hold idle connections without a goroutine; it needs epoll,
// so elsewhere idle connections keep a small goroutine each.
type parker struct{}

func newParker(*slog.Logger) *parker { return nil }

func (p *parker) park(context.Context, *conn) bool { return false }

func (p *parker) unpark(*conn) {}

func (p *parker) close() error { return nil }
