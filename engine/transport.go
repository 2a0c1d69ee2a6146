package engine

import "golang.org/x/sys/unix"

// A transport is where a connection's bytes go. The partition that owns the
// connection is its only writer, and calls it only from its own goroutine.
//
// Frames are encoded once per protocol as complete WebSocket frames (see
// codec), because every transport today is a WebSocket. A transport that
// does not frame, such as an HTTP long-polling response, takes each frame's
// payload instead: the header is at most maxHeader bytes in front of it.
type transport interface {
	// write sends as much of frames, in order, as the transport takes now
	// without blocking, and returns the number of bytes taken. It returns
	// unix.EAGAIN when it takes nothing now, and another error when it
	// never will again (the peer is gone).
	write(frames [][]byte, iov *[maxIovecs]unix.Iovec) (int, error)
	// closeWrite ends the outbound stream after what was written.
	closeWrite()
	// abort ends both directions now: the reader side wakes and sees the end.
	abort()
	// released: the owner is done with the conn, however its close went
	// (the reader may have ended first, and neither closeWrite nor abort
	// have run).
	released()
}

// fdTransport is a non-blocking socket registered with the poller: the conn's
// own descriptor, so that pointing a conn at it allocates nothing.
type fdTransport int

var _ transport = (*fdTransport)(nil)

func (t *fdTransport) write(frames [][]byte, iov *[maxIovecs]unix.Iovec) (int, error) {
	return send(int(*t), frames, iov)
}

func (t *fdTransport) closeWrite() { unix.Shutdown(int(*t), unix.SHUT_WR) }

func (t *fdTransport) abort() { unix.Shutdown(int(*t), unix.SHUT_RDWR) }

// released: the descriptor is closed with the conn's last reference.
func (t *fdTransport) released() {}
