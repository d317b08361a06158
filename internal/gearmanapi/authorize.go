package gearmanapi

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strings"

	"github.com/gearwork/gearwork/internal/auth"
)

// Authorizer decides what a connection may do. Gearman has no
// authentication packet, so the identity comes from the transport: the
// verified client certificate (mutual TLS) and the source address.
// Implementations must be safe for concurrent use; *auth.Policy is one.
//
// The check is split in two so that the submit path stays cheap: Grant is
// called once per connection, after the TLS handshake, and the returned
// Grant is consulted for every SUBMIT_* (auth.ActionSubmit, with the
// function name), CAN_DO and CAN_DO_TIMEOUT (auth.ActionServe, with the
// function name), every admin command that changes state
// (auth.ActionAdmin, with the command name, e.g. "cancel job"), and every
// payload, result or error an admin command would show (auth.ActionRead,
// with the job's function name); adminCommands says which is which. A denied
// request gets an ERROR packet PERMISSION_DENIED (or an "ERR
// PERMISSION_DENIED" line) and the connection stays open.
type Authorizer interface {
	Grant(id auth.Identity) *auth.Grant
}

var _ Authorizer = (*auth.Policy)(nil)

// handshake completes the TLS handshake (within Config.HandshakeTimeout)
// if the connection is TLS, then sets the peer's identity, grant and
// packet size limit. It reports false if the connection must be closed.
func (c *conn) handshake(ctx context.Context) bool {
	var state *tls.ConnectionState
	if tc, ok := c.nc.(*tls.Conn); ok {
		hctx, cancel := context.WithTimeout(ctx, c.srv.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.srv.stats.handshakeFailures.Add(1)
			c.srv.limited.log(c.srv.log, slog.LevelInfo, "gearmanapi: TLS handshake failed",
				slog.String("remote", c.remote), slog.String("error", err.Error()))
			return false
		}
		st := tc.ConnectionState()
		state = &st
	}
	c.id = auth.FromConn(c.nc.RemoteAddr(), state)
	c.maxBody = c.srv.cfg.MaxPacket
	if a := c.srv.cfg.Authorizer; a != nil {
		c.grant = a.Grant(c.id)
		if !c.grant.Any() {
			c.maxBody = min(c.srv.cfg.MaxPacketUnauthenticated, c.srv.cfg.MaxPacket)
		}
	}
	return true
}

// allowed reports whether the connection may perform action on name,
// logging a denial (the first one per connection at warning level).
func (c *conn) allowed(action auth.Action, name string) bool {
	if c.grant == nil || c.grant.Allow(action, name) {
		return true
	}
	level := slog.LevelDebug
	if !c.denied {
		c.denied = true
		level = slog.LevelWarn
	}
	c.srv.limited.log(c.srv.log, level, "gearmanapi: permission denied",
		slog.String("identity", c.id.String()), slog.String("action", action.String()), slog.String("name", name))
	return false
}

// deniedText explains a denial to the peer.
func (c *conn) deniedText(action auth.Action, name string) string {
	verb := map[auth.Action]string{auth.ActionSubmit: "submit to", auth.ActionServe: "serve", auth.ActionAdmin: "run",
		auth.ActionRead: "read"}[action]
	return c.id.String() + " may not " + verb + " " + name
}

// deniedLine is the admin text answer to a denied command or read.
func (c *conn) deniedLine(action auth.Action, name string) string {
	return "ERR PERMISSION_DENIED " + strings.ReplaceAll(adminText(c.deniedText(action, name)), " ", "+") + "\r\n"
}
