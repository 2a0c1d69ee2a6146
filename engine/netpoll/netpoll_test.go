package netpoll

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestEventsAndClose(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	if err := p.Add(fds[0]); err != nil {
		t.Fatal(err)
	}
	got := make(chan Event, 16)
	done := make(chan error, 1)
	go func() {
		done <- p.Wait(func(fd int, ev Event) {
			if fd != fds[0] {
				t.Errorf("event for fd %d, want %d", fd, fds[0])
			}
			got <- ev
		})
	}()
	wait := func(want Event) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case ev := <-got:
				if ev&want == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %v event", want)
			}
		}
	}
	wait(Writable) // a fresh socket is writable: the first edge
	unix.Write(fds[1], []byte("x"))
	wait(Readable)
	unix.Close(fds[0]) // closing removes it; the peer's close is a hangup for nobody
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait = %v, want ErrClosed", err)
	}
}

func TestHangup(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	defer unix.Close(fds[0])
	p.Add(fds[0])
	got := make(chan Event, 16)
	go p.Wait(func(fd int, ev Event) { got <- ev })
	defer p.Close()
	unix.Close(fds[1])
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-got:
			if ev&Hangup != 0 {
				return
			}
		case <-deadline:
			t.Fatal("no hangup after the peer closed")
		}
	}
}
