package engine

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxIovecs bounds one writev; the rest of a queue goes in the next call.
const maxIovecs = 64

// writev writes bufs with one system call and returns the bytes written.
// unix.Writev allocates its iovec slice on every call; this keeps it in the
// caller-owned scratch array, so a flush allocates nothing.
func writev(fd int, bufs [][]byte, iov *[maxIovecs]unix.Iovec) (int, error) {
	n := 0
	for _, b := range bufs {
		if n == maxIovecs {
			break
		}
		if len(b) == 0 {
			continue
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
	}
	if n == 0 {
		return 0, nil
	}
	for {
		r, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		if errno == unix.EINTR {
			continue
		}
		// Drop the references so the scratch array does not keep frames alive.
		for i := 0; i < n; i++ {
			iov[i].Base = nil
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), nil
	}
}
