//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// fleet is the parent's handle on its worker processes.
type fleet struct {
	kids  []*kid
	ready readyMsg // summed over kids
	nodes int      // servers the connections are spread over
}

type kid struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan []byte // stdout, one JSON line each; closed at EOF
	want  int
}

// startFleet starts ceil(n/PerProc) workers for connections first..first+n-1
// and waits until every one has reported ready.
func startFleet(ctx context.Context, t *target, first, n int, stderr io.Writer) (*fleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	procs := max(1, (n+t.PerProc-1)/t.PerProc)
	rate := max(1, t.ConnectRate/procs)
	f := &fleet{nodes: t.nodes()}
	for i := range procs {
		want := n / procs
		if i < n%procs {
			want++
		}
		args := append([]string{"worker"}, t.workerArgs()...)
		args = append(args, "--first", strconv.Itoa(first), "--count", strconv.Itoa(want), "--rate", strconv.Itoa(rate))
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "LOADGEN_SECRET="+t.Secret)
		cmd.Stderr = stderr
		// A worker also dies with its parent, and on its own --timeout.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		k := &kid{cmd: cmd, want: want, lines: make(chan []byte, 4)}
		if k.in, err = cmd.StdinPipe(); err != nil {
			f.close()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			f.close()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			f.close()
			return nil, fmt.Errorf("start worker: %w", err)
		}
		// The reader stops at the worker's stdout EOF, when it exits.
		go func() {
			defer close(k.lines)
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			for sc.Scan() {
				k.lines <- append([]byte(nil), sc.Bytes()...)
			}
		}()
		f.kids = append(f.kids, k)
		first += want
	}

	deadline := time.Now().Add(t.ReadyWait)
	f.ready = readyMsg{Type: "ready", Errors: map[string]int{}}
	for _, k := range f.kids {
		var r readyMsg
		if err := k.read(ctx, time.Until(deadline), &r); err != nil {
			f.close()
			return nil, fmt.Errorf("worker %d not ready: %w", k.cmd.Process.Pid, err)
		}
		f.ready.Want += r.Want
		f.ready.Open += r.Open
		f.ready.PerNode = addInts(f.ready.PerNode, r.PerNode)
		f.ready.Failed += r.Failed
		f.ready.Retried += r.Retried
		f.ready.TookMs = max(f.ready.TookMs, r.TookMs)
		for e, c := range r.Errors {
			f.ready.Errors[e] += c
		}
	}
	return f, nil
}

// read waits for the next line from k and decodes it into v.
func (k *kid) read(ctx context.Context, timeout time.Duration, v any) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-k.lines:
		if !ok {
			return errors.New("worker exited")
		}
		return json.Unmarshal(line, v)
	case <-t.C:
		return errors.New("timed out")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call sends c to every worker and decodes each answer with decode.
func (f *fleet) call(ctx context.Context, c command, decode func(i int, line json.RawMessage) error) error {
	line, err := json.Marshal(c)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	for _, k := range f.kids {
		if _, err := k.in.Write(line); err != nil {
			return fmt.Errorf("worker %d: %w", k.cmd.Process.Pid, err)
		}
	}
	for i, k := range f.kids {
		var raw json.RawMessage
		if err := k.read(ctx, 30*time.Second, &raw); err != nil {
			return fmt.Errorf("worker %d, %s: %w", k.cmd.Process.Pid, c.Op, err)
		}
		if err := decode(i, raw); err != nil {
			return err
		}
	}
	return nil
}

// pids lists the worker processes, for reading their CPU time.
func (f *fleet) pids() []int {
	var p []int
	for _, k := range f.kids {
		p = append(p, k.cmd.Process.Pid)
	}
	return p
}

// close ends every worker: stdin EOF asks it to exit, and whoever has not
// after 5 s is killed. Its stdout is drained before Wait, as exec requires.
func (f *fleet) close() {
	for _, k := range f.kids {
		k.in.Close()
	}
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for _, k := range f.kids {
	drain:
		for {
			select {
			case _, ok := <-k.lines:
				if !ok {
					break drain
				}
			case <-deadline.C:
				for _, k := range f.kids {
					k.cmd.Process.Kill()
				}
			}
		}
		k.cmd.Wait()
	}
}

// addInts adds b to a element by element, growing a as needed.
func addInts[T int | int64](a, b []T) []T {
	for len(a) < len(b) {
		a = append(a, 0)
	}
	for i, v := range b {
		a[i] += v
	}
	return a
}
