package main

import (
	"fmt"
	"log/slog"
)

// Descriptors kept back from Gearman connections for everything else the
// server opens: the store's files (Pebble's write-ahead logs, tables and
// manifest, or PostgreSQL connections), the HTTP API's listener and
// connections, the epoll instance and the standard streams. A quarter of
// the limit, at least fileReserveMin and at most fileReserveMax; the
// Pebble store may keep all but fileReserveOther of them open (Pebble
// keeps at least 64 tables open whatever it is told, hence the minimum).
const (
	fileReserveMin   = 128
	fileReserveMax   = 1024
	fileReserveOther = 32
)

// fileReserve returns how many of limit descriptors are kept back from
// Gearman connections.
func fileReserve(limit uint64) uint64 {
	return min(max(limit/4, fileReserveMin), fileReserveMax)
}

// fileBudget is how the open file limit is shared out.
type fileBudget struct {
	// conns is the Gearman connection limit (gearmanapi.Config.MaxConnections).
	conns int
	// httpConns is the HTTP connection limit; 0 without the HTTP API.
	httpConns int
	// storeFiles is how many files the store may keep open; 0 for its
	// default.
	storeFiles int
}

// shareFiles shares the open file limit out between the store, Gearman
// connections and HTTP connections (httpOn: the HTTP API runs). The
// Gearman limit is maxConns (0: no limit) and the HTTP one maxHTTP (0: no
// limit), but together never more than the open file limit less the
// reserve, so that a flood of connections on either port cannot take the
// descriptors the store needs; HTTP connections get at most a quarter of
// that room. The store may use the reserve less fileReserveOther. A limit
// of 0 (unknown) leaves the connection limits as they are and the store
// at its default. It logs the figures, and fails when the limit leaves no
// room for connections.
func shareFiles(maxConns, maxHTTP int, httpOn bool, limit uint64, log *slog.Logger) (fileBudget, error) {
	if !httpOn {
		maxHTTP = 0
	}
	if limit == 0 {
		return fileBudget{conns: maxConns, httpConns: maxHTTP}, nil
	}
	reserve := fileReserve(limit)
	if limit <= reserve {
		return fileBudget{}, fmt.Errorf("the open file limit (%d) leaves no descriptors for connections beyond the %d kept for the store: raise it (ulimit -n)", limit, reserve)
	}
	room := int(min(limit-reserve, uint64(1<<31-1)))
	fb := fileBudget{conns: maxConns, storeFiles: int(reserve - fileReserveOther)}
	attrs := []any{slog.Uint64("open_file_limit", limit), slog.Uint64("reserved", reserve), slog.Int("store_files", fb.storeFiles)}
	capped := false
	if httpOn {
		share := max(room/4, 1)
		fb.httpConns = maxHTTP
		if maxHTTP == 0 || maxHTTP > share {
			fb.httpConns, capped = share, true
			attrs = append(attrs, slog.Int("requested_http", maxHTTP))
		}
		room -= fb.httpConns
		attrs = append(attrs, slog.Int("http_max_connections", fb.httpConns))
		if room == 0 {
			// A Gearman limit of 0 would mean no limit.
			return fileBudget{}, fmt.Errorf("the open file limit (%d) leaves no descriptors for Gearman connections beyond the %d kept for the store and the %d for HTTP connections: raise it (ulimit -n)", limit, reserve, fb.httpConns)
		}
	}
	if maxConns == 0 || maxConns > room {
		fb.conns, capped = room, true
		attrs = append(attrs, slog.Int("requested", maxConns))
	}
	attrs = append(attrs, slog.Int("max_connections", fb.conns))
	if capped {
		log.Warn("serve: connection limits capped below the open file limit", attrs...)
	} else {
		log.Info("serve: file descriptors", attrs...)
	}
	return fb, nil
}
