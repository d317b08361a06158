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

// capConnections returns the Gearman connection limit in force and the
// files the store may keep open. The connection limit is maxConns (0: no
// limit), but never more than the open file limit less the reserve, so
// that a flood of connections cannot take the descriptors the store
// needs; the store may use the reserve less fileReserveOther. A limit of 0
// (unknown) leaves maxConns as it is and the store at its default (0). It
// logs the figures, and fails when the limit leaves no room for
// connections.
func capConnections(maxConns int, limit uint64, log *slog.Logger) (conns, storeFiles int, err error) {
	if limit == 0 {
		return maxConns, 0, nil
	}
	reserve := fileReserve(limit)
	if limit <= reserve {
		return 0, 0, fmt.Errorf("the open file limit (%d) leaves no descriptors for connections beyond the %d kept for the store: raise it (ulimit -n)", limit, reserve)
	}
	room := int(min(limit-reserve, uint64(1<<31-1)))
	storeFiles = int(reserve - fileReserveOther)
	attrs := []any{slog.Uint64("open_file_limit", limit), slog.Uint64("reserved", reserve), slog.Int("store_files", storeFiles)}
	if maxConns == 0 || maxConns > room {
		log.Warn("serve: --max-connections capped below the open file limit", append(attrs,
			slog.Int("requested", maxConns), slog.Int("max_connections", room))...)
		return room, storeFiles, nil
	}
	log.Info("serve: file descriptors", append(attrs, slog.Int("max_connections", maxConns))...)
	return maxConns, storeFiles, nil
}
