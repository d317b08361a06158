package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
)

// sdNotify sends a state line ("READY=1", "STOPPING=1", "RELOADING=1")
// to the service manager when the server runs under systemd with
// Type=notify (deploy/gearwork.service): systemd sets NOTIFY_SOCKET to a
// Unix datagram socket, and the protocol is one datagram of
// newline-separated KEY=VALUE lines (sd_notify(3)). Without NOTIFY_SOCKET
// it does nothing. A failure is logged, never fatal: the server works the
// same without a service manager.
func sdNotify(log *slog.Logger, state ...string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if err := sendNotify(path, strings.Join(state, "\n")); err != nil {
		log.Warn("serve: cannot notify the service manager", slog.String("socket", path), slog.String("error", err.Error()))
	}
}

// sendNotify writes msg as one datagram to the notification socket at
// path; a leading '@' names a socket in the abstract namespace.
func sendNotify(path, msg string) error {
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	} else if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("NOTIFY_SOCKET %q is neither a path nor an abstract socket", path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(msg))
	return err
}
