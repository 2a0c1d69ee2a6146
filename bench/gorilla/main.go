// Command gorilla is the comparison baseline for the sidecar benchmarks: a
// classic goroutine-per-connection gorilla/websocket server, written the way
// gorilla's chat example (examples/chat) teaches it. Each connection has a read
// goroutine, a write goroutine and a 256-slot send channel; a single hub
// goroutine owns the registry and fans a broadcast out over the channels.
//
// It speaks enough of the sidecar's contract (docs/DESIGN.md sections 3 and 4) for
// the same load generator to drive both:
//
//	GET  /ws?token=<JWT>                   HS256, user from "sub"
//	POST /api/socket-test/broadcast        body -> {"event":"newNotification","data":<body>,"id":"<n>"} to all
//	POST /api/socket-test/send/{userId}    the same, to one user's connections
//	GET  /api/socket-test/stats            {"connections":n,"users":n,"uptime_seconds":n}
//
// /api/* takes "Authorization: Bearer <api key>". The secret and the keys are
// read from the same environment variables as the sidecar's
// (SIDECAR_AUTH__JWT_SECRET, SIDECAR_API__KEYS) so one run script serves both;
// flags override them.
//
// It is a yardstick, not a straw man: gorilla's defaults, no tuning.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gorilla:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gorilla", flag.ContinueOnError)
	addr := fs.String("addr", envOr("SIDECAR_LISTEN", "127.0.0.1:8080"), "listen address (env SIDECAR_LISTEN)")
	secret := fs.String("secret", os.Getenv("SIDECAR_AUTH__JWT_SECRET"), "HS256 secret (env SIDECAR_AUTH__JWT_SECRET)")
	keys := fs.String("api-keys", os.Getenv("SIDECAR_API__KEYS"), "comma-separated API keys for /api/* (env SIDECAR_API__KEYS)")
	readBuf := fs.Int("read-buffer", 0, "Upgrader.ReadBufferSize; 0 is gorilla's default (reuse net/http's 4 KiB buffer)")
	writeBuf := fs.Int("write-buffer", 0, "Upgrader.WriteBufferSize; 0 is gorilla's default (reuse net/http's 4 KiB buffer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secret == "" {
		return errors.New("no JWT secret: set --secret or SIDECAR_AUTH__JWT_SECRET")
	}
	if *keys == "" {
		return errors.New("no API key: set --api-keys or SIDECAR_API__KEYS")
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	h := newHub()
	// The hub goroutine stops when ctx is done.
	go h.run(ctx)

	s := &server{
		hub:     h,
		secret:  []byte(*secret),
		apiKeys: strings.Split(*keys, ","),
		started: time.Now(),
		logger:  logger,
	}
	s.upgrader.ReadBufferSize = *readBuf
	s.upgrader.WriteBufferSize = *writeBuf

	srv := &http.Server{
		Addr:              *addr,
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	// The listener goroutine stops when Shutdown is called below.
	go func() { errc <- srv.ListenAndServe() }()
	logger.Info("listening", "addr", *addr, "pid", os.Getpid())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Shutdown does not touch hijacked connections; the process exits next.
	return srv.Shutdown(shutdownCtx)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
