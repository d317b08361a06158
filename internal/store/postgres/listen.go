package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// listener holds one connection that LISTENs on the store's channel and
// calls wake for every notification about jobs and meta for every one
// about metadata. It calls meta("") once it first listens, and when the
// connection breaks it reconnects with backoff and calls wake("") and
// meta("") once it is back, since notifications sent meanwhile are lost.
// It calls lost when the connection breaks.
type listener struct {
	url, channel string
	wake         func(function string)
	meta         func(key string)
	lost         func(error)
	log          *slog.Logger
	cancel       context.CancelFunc
	ctx          context.Context
	wg           sync.WaitGroup
}

func newListener(url, channel string, wake, meta func(string), lost func(error), log *slog.Logger) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &listener{url: url, channel: channel, wake: wake, meta: meta, lost: lost, log: log, ctx: ctx, cancel: cancel}
}

func (l *listener) start() {
	l.wg.Add(1)
	go l.run()
}

// stop ends the listener and waits for it. Safe to call twice.
func (l *listener) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *listener) run() {
	defer l.wg.Done()
	backoff := 50 * time.Millisecond
	first := true
	for l.ctx.Err() == nil {
		err := l.listen(first)
		first = false
		if l.ctx.Err() != nil {
			return
		}
		l.log.Warn("postgres: listening for notifications failed; reconnecting",
			slog.String("error", err.Error()), slog.Duration("in", backoff))
		l.lost(err)
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listen connects, listens and delivers notifications until an error.
func (l *listener) listen(first bool) error {
	conn, err := pgx.Connect(l.ctx, l.url)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()
	if _, err := conn.Exec(l.ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		return err
	}
	if !first {
		l.log.Info("postgres: listening for notifications again")
		l.wake("")
	}
	// Metadata written before the listener was connected (also while the
	// server started) is read back once it is.
	l.meta("")
	for {
		n, err := conn.WaitForNotification(l.ctx)
		if err != nil {
			return err
		}
		if name, isMeta := decodePayload(n.Payload); isMeta {
			l.meta(name)
		} else {
			l.wake(name)
		}
	}
}
