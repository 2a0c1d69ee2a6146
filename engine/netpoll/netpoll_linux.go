// Package netpoll is a small edge-triggered epoll loop: it tells its caller
// which file descriptors became readable, writable or hung up, and nothing
// else. It keeps no per-descriptor state, so an idle connection costs the
// poller nothing but the kernel's epoll entry.
package netpoll

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Event is what happened to a descriptor.
type Event uint32

const (
	Readable Event = 1 << iota
	Writable
	Hangup // the peer closed or the socket failed; a read will say which
)

// ErrClosed is returned by Wait after Close.
var ErrClosed = errors.New("netpoll: closed")

// Poller is one epoll instance. Add may be called from any goroutine; Wait is
// called by exactly one.
type Poller struct {
	epfd   int
	wakefd int // eventfd that breaks Wait out of epoll_wait on Close
}

// New creates a poller.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl wake: %w", err)
	}
	return &Poller{epfd: epfd, wakefd: wakefd}, nil
}

// Add registers fd for edge-triggered read, write and hang-up events. It is
// registered once for its whole life: no re-arming, so a reader and a writer
// never race to change its mask. Closing fd removes it.
func (p *Poller) Add(fd int) error {
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
		Fd:     int32(fd),
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add %d: %w", fd, err)
	}
	return nil
}

// Wait calls handle for every event until Close; it then returns ErrClosed.
// handle runs on Wait's goroutine and must not block for long.
func (p *Poller) Wait(handle func(fd int, ev Event)) error {
	var events [256]unix.EpollEvent
	for {
		n, err := unix.EpollWait(p.epfd, events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for i := 0; i < n; i++ {
			e := &events[i]
			fd := int(e.Fd)
			if fd == p.wakefd {
				return ErrClosed
			}
			var ev Event
			if e.Events&(unix.EPOLLIN|unix.EPOLLPRI) != 0 {
				ev |= Readable
			}
			if e.Events&unix.EPOLLOUT != 0 {
				ev |= Writable
			}
			if e.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				ev |= Hangup
			}
			handle(fd, ev)
		}
	}
}

// Close wakes Wait, which then returns ErrClosed, and releases the poller.
// Descriptors still registered are not closed.
func (p *Poller) Close() error {
	var one = [8]byte{1}
	_, err := unix.Write(p.wakefd, one[:])
	return err
}

// Release frees the epoll and eventfd descriptors; call it after Wait returned.
func (p *Poller) Release() {
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
}
