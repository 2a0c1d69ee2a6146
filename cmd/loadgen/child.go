//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"
)

// runWorker is the child side: `loadgen worker --first i --count n --rate r
// [target flags]`. It opens its connections, prints {"type":"ready",...},
// then answers commands read from stdin as JSON lines with one JSON line each
// on stdout. It exits on quit, on stdin EOF (the parent is gone) or when
// --timeout passes.
func runWorker(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	var t target
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	t.register(fs)
	first := fs.Int("first", 0, "global index of the first connection")
	count := fs.Int("count", 0, "connections to open")
	rate := fs.Int("rate", 1000, "connections per second")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	srcs, _ := parseSrc(t.Src)
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()

	w, err := newWorker()
	if err != nil {
		return err
	}
	// LOADGEN_CPUPROFILE=dir profiles each worker, to check that the client
	// stays cheap.
	if dir := os.Getenv("LOADGEN_CPUPROFILE"); dir != "" {
		pf, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d.prof", os.Getpid())))
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var mu sync.Mutex // serialises lines on stdout
	enc := json.NewEncoder(stdout)
	emit := func(v any) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(v)
	}
	w.batch = t.Batch
	w.nodes = t.nodes()
	w.want = *count
	w.dialStart = time.Now()
	w.onReady = func(r readyMsg) { emit(r) }
	if *count == 0 {
		emit(w.ready())
		w.onReady = nil
	}

	results := make(chan dialResult)
	cmds := make(chan command)
	d := &dialer{bases: t.urls, timeout: t.DialTimeout, tokens: &tokens{secret: []byte(t.Secret), static: t.Token, cmd: t.TokenCmd}}
	// dialAll stops when every connection is tried or ctx is done.
	go dialAll(ctx, d, srcs, t.UserPrefix, *first, *count, *rate, t.DialWorkers, t.Retries, results)

	// The command reader stops at stdin EOF or after answering quit; it then
	// cancels ctx, which stops loop.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer cancel()
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			var c command
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				emit(map[string]any{"type": "error", "error": fmt.Sprintf("bad command: %v", err)})
				continue
			}
			c.reply = make(chan any, 1)
			select {
			case cmds <- c:
			case <-ctx.Done():
				return
			}
			emit(<-c.reply)
			if c.Op == "quit" {
				return
			}
		}
	}()
	err = w.loop(ctx, results, cmds)
	// Let the reader print its answer to quit before the process exits.
	tm := time.NewTimer(time.Second)
	defer tm.Stop()
	select {
	case <-readerDone:
	case <-tm.C:
	}
	return err
}
