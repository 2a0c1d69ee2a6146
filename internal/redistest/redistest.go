// Package redistest starts real redis-server processes for tests (Debian's
// redis-server package, 7.0, found on PATH): a single server or a cluster
// of masters, which a test can kill, restart, pause and resume to put
// faults under the code it tests, such as the Redis broker.
//
// Every server listens on 127.0.0.1 on a free port of its own, chosen at
// run time, with its own t.TempDir, no persistence (--save "" --appendonly
// no) and its log in that dir. The package never uses port 6379 and never
// connects to the shared Redis there. Each process is killed and waited for
// in t.Cleanup, so none outlives its test, and on Linux the kernel kills it
// too if the test binary dies first.
//
// Where no redis-server binary is found the helpers skip the test. A
// server is ready when it answers INFO with its own process id, so an
// answer from another process that took the port does not count.
//
// The methods that can fail the test (Start, Restart, StartCluster) must be
// called from the test's goroutine, like t.Fatal.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 10 * time.Second // Start and Restart: until the server answers
	doTimeout    = 5 * time.Second  // Do: one redis-cli command
	killTimeout  = 10 * time.Second // Kill: until the process has exited
	startTries   = 3                // Start: fresh ports tried when redis cannot bind
	maxPort      = 55000            // port+10000 (the cluster bus) must be a valid port too
)

// Server is one redis-server process on 127.0.0.1.
type Server struct {
	t    testing.TB
	bin  string // redis-server
	cli  string // redis-cli
	dir  string
	port int
	args []string // extra arguments, kept for Restart

	mu     sync.Mutex
	proc   *os.Process
	done   chan struct{} // closed when proc has exited
	paused bool
}

// Start starts a redis-server with the given extra arguments (for example
// "--maxmemory", "10mb") and waits until it answers, for 10 s at most.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, cli := binaries(t)
	s := &Server{t: t, bin: bin, cli: cli, dir: t.TempDir(), args: args}
	t.Cleanup(s.Kill) // after TempDir's, so it runs before the dir is removed
	var err error
	for range startTries {
		if s.port, err = freePort(); err != nil {
			break
		}
		if err = s.start(); err == nil {
			return s
		}
		// Another process may have taken the port since freePort: try another.
	}
	t.Fatalf("redistest: %v\n%s", err, s.logTail())
	return nil
}

// Addr is the server's address, "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's address as "redis://127.0.0.1:port".
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Dir is the server's own directory, which holds its log (redis.log).
func (s *Server) Dir() string { return s.dir }

// Kill sends SIGKILL and waits until the process has exited. It does
// nothing if the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	if s.paused {
		_ = s.proc.Signal(syscall.SIGCONT)
		s.paused = false
	}
	_ = s.proc.Kill()
	select {
	case <-s.done:
	case <-time.After(killTimeout):
		s.t.Errorf("redistest: redis-server pid %d on %s has not exited %v after SIGKILL", s.proc.Pid, s.Addr(), killTimeout)
	}
	s.proc = nil
}

// Restart kills the server if it is running and starts it again on the
// same port, with the same dir and arguments, then waits until it answers.
// A cluster node comes back with its nodes.conf, so it rejoins its cluster.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.start()
		if err == nil {
			return
		}
		// The port may still be held for a moment (redis sets SO_REUSEADDR,
		// so it normally binds at once).
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: restart: %v\n%s", err, s.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Pause stops the process with SIGSTOP: its port stays open but nothing is
// answered until Resume.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP, true) }

// Resume continues a paused process with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Errorf("redistest: %v: redis-server on %s is not running", sig, s.Addr())
		return
	}
	if err := s.proc.Signal(sig); err != nil {
		s.t.Errorf("redistest: %v: %v", sig, err)
		return
	}
	s.paused = paused
}

// Do runs one command against the server with redis-cli (for example
// Do("SET", "k", "v")) and returns its output without the trailing
// newline. An error reply, a connection failure or 5 s without an answer
// is an error.
func (s *Server) Do(args ...string) (string, error) {
	return runCLI(s.cli, s.port, nil, args...)
}

// start starts the process on s.port and waits until it answers.
func (s *Server) start() error {
	out, err := os.OpenFile(filepath.Join(s.dir, "redis.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"),
		"--save", "", "--appendonly", "no", "--daemonize", "no",
	}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = out, out // what redis says before its log is open
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.proc, s.done, s.paused = cmd.Process, done, false
	s.mu.Unlock()

	pid := "process_id:" + strconv.Itoa(cmd.Process.Pid) + "\r\n"
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		// INFO rather than PING: it tells that the answer is from this
		// process, not from one that took the port.
		if info, err := s.info(); err == nil && strings.Contains(info, pid) {
			return nil
		}
		select {
		case <-done:
			s.Kill()
			return fmt.Errorf("redis-server on %s exited before answering", s.Addr())
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.Kill()
	return fmt.Errorf("redis-server on %s has not answered in %v", s.Addr(), readyTimeout)
}

// info sends INFO server over a fresh connection and returns the reply.
func (s *Server) info() (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "INFO server\r\n"); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if !strings.HasPrefix(line, "$") || err != nil || n < 0 {
		return "", fmt.Errorf("INFO: unexpected reply %q", line)
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return string(body), err
}

// logTail is the end of the server's log and of what it wrote to stdout
// and stderr, for a failure message.
func (s *Server) logTail() string {
	var b strings.Builder
	for _, name := range []string{"redis.out", "redis.log"} {
		data, _ := os.ReadFile(filepath.Join(s.dir, name))
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		fmt.Fprintf(&b, "--- %s (end) ---\n%s\n", name, strings.Join(lines, "\n"))
	}
	return b.String()
}

// runCLI runs redis-cli against 127.0.0.1:port with pre before the
// connection options (for example -c) and args after them.
func runCLI(cli string, port int, pre []string, args ...string) (string, error) {
	return runCLIWithin(doTimeout, cli, port, pre, args...)
}

// runCLIWithin is runCLI with its own time limit.
func runCLIWithin(timeout time.Duration, cli string, port int, pre []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append(slices.Clone(pre), "-e", "-h", "127.0.0.1", "-p", strconv.Itoa(port)), args...)
	cmd := exec.CommandContext(ctx, cli, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := strings.TrimSuffix(stdout.String(), "\n")
	if ctx.Err() != nil {
		return out, fmt.Errorf("redis-cli %s: no answer in %v", strings.Join(args, " "), timeout)
	}
	if err != nil {
		return out, fmt.Errorf("redis-cli %s: %v: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()+" "+out))
	}
	return out, nil
}

// binaries finds redis-server, and redis-cli beside it or on PATH, or skips
// the test.
func binaries(t testing.TB) (server, cli string) {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found: install Debian's redis-server to run this test")
	}
	cli = filepath.Join(filepath.Dir(server), "redis-cli")
	if _, err := os.Stat(cli); err != nil {
		if cli, err = exec.LookPath("redis-cli"); err != nil {
			t.Skip("redis-cli not found: install Debian's redis-server to run this test")
		}
	}
	return server, cli
}

var (
	portsMu sync.Mutex
	taken   = map[int]bool{} // ports (and bus ports) handed out in this process
)

// freePort finds a port <= 55000 on 127.0.0.1 that is free, and whose
// cluster bus port (port+10000) is free too, never 6379 and never one
// handed out before in this process.
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		port, err := listenFree(0)
		if err != nil {
			return 0, err
		}
		if port > maxPort || port == 6379 || taken[port] || taken[port+10000] {
			continue
		}
		if _, err := listenFree(port + 10000); err != nil {
			continue
		}
		taken[port], taken[port+10000] = true, true
		return port, nil
	}
	return 0, errors.New("no free port pair (port, port+10000) found on 127.0.0.1")
}

// listenFree listens on 127.0.0.1:port (0 for any), closes the listener
// and returns its port.
func listenFree(port int) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
