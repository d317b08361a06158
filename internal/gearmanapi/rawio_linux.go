//go:build linux && !race

package gearmanapi

import (
	"syscall"
	"unsafe"
)

// sysRead and sysWrite make one read or write on a non-blocking socket
// without the runtime's bookkeeping for a system call that may block
// (entersyscall), which wakes the runtime's monitor thread whenever it
// sleeps: on a server that idles between jobs, that was one more thread
// wake-up per request. A call on a non-blocking socket does not block, so
// the goroutine may keep its processor meanwhile.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) { return rawIO(syscall.SYS_READ, fd, p) }

func sysWrite(fd uintptr, b []byte) (int, syscall.Errno) { return rawIO(syscall.SYS_WRITE, fd, b) }

// rawIO makes the read or write system call trap on fd with b.
func rawIO(trap, fd uintptr, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}
