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
	var all []net.Conn
	defer func() {
		for _, c := range all {
			c.Close()
		}
	}()
	var srv []net.Conn
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return 0, err
		}
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			return 0, err
		}
		all = append(all, c, s)
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
