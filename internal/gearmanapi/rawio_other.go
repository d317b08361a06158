//go:build !linux || race

package gearmanapi

import "syscall"

// sysRead and sysWrite make one read or write on a non-blocking socket;
// through package syscall, whose calls the race detector sees (it orders a
// write to a socket before the read that gets its bytes).
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errno(err)
}

func sysWrite(fd uintptr, b []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), b)
	return max(n, 0), errno(err)
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
}
