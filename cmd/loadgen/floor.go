//go:build linux

package main

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// writeFloor measures what one small write to a loopback TCP socket costs
// this machine in CPU: conns connection pairs, rounds writes of size bytes
// to each, nobody reading; the best of trials. The kernel delivers each segment to the peer's
// socket inside the write, so this is the floor under any server's cost per
// delivered message here; it differs several-fold between machines and
// virtualisation, and it lets figures from two machines be compared.
func writeFloor(conns, rounds, trials, size int) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	var srv []net.Conn
	var peers []int
	defer func() {
		for _, c := range srv {
			c.Close()
		}
		for _, fd := range peers {
			unix.Close(fd)
		}
	}()
	for range conns {
		// The reading ends are plain blocking sockets, outside Go's
		// netpoller: had they been in it, each write would wake a runtime
		// thread parked in epoll_wait, and that wake-up (an IPI on a VM)
		// would be counted as part of the write.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		peers = append(peers, fd)
		sa := &unix.SockaddrInet4{Port: addr.Port}
		copy(sa.Addr[:], addr.IP.To4())
		if err := unix.Connect(fd, sa); err != nil {
			return 0, err
		}
		s, err := ln.Accept()
		if err != nil {
			return 0, err
		}
		srv = append(srv, s)
	}
	msg := make([]byte, size)
	best := time.Duration(-1)
	for range trials {
		c0 := processCPU()
		for range rounds {
			for _, s := range srv {
				if _, err := s.Write(msg); err != nil {
					return 0, fmt.Errorf("write floor: %w", err)
				}
			}
		}
		if d := (processCPU() - c0) / time.Duration(conns*rounds); best < 0 || d < best {
			best = d
		}
	}
	return best, nil
}

// processCPU is this process's CPU time; nothing else in the coordinator is
// busy while the floor is measured.
func processCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
