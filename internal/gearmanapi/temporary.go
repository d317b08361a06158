package gearmanapi

import (
	"errors"
	"syscall"
)

// isTemporary reports accept errors worth retrying after a pause: out of
// file descriptors or memory, or a connection aborted before accept.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}
