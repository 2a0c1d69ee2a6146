package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/expr-lang/expr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sidecar/sidecar/config"
	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/cluster"
	"github.com/sidecar/sidecar/engine/forward"
	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/webhook"
	"github.com/sidecar/sidecar/rules/live"
)

// runServe is `sidecar [serve] [--config F]`: it loads the config, sets up
// logging and the listener, and serves until ctx is done.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve")
	path := fs.String("config", "", "config file (YAML); SIDECAR_* environment variables override it")
	if ok, err := parseFlags(fs, args, stdout, stderr); !ok {
		return err
	}
	cfg, warnings, err := config.Load(*path, os.Environ())
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		logger.Warn(w)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return serve(ctx, cfg, ln, logger, hup)
}

// serve runs a node with cfg on ln until ctx is done. It owns ln.
func serve(ctx context.Context, cfg *config.Config, ln net.Listener, logger *slog.Logger, hup <-chan os.Signal) error {
	defer ln.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	vcfg := cfg.Auth.VerifierConfig()
	vcfg.Logger = logger.With("component", "auth")
	verifier, err := auth.New(vcfg)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	verifier.RegisterMetrics(reg)
	adminIf, err := compileAdminIf(cfg.API.AdminIf)
	if err != nil {
		return err
	}
	st, err := store.Open(cfg.Store.Path, store.Options{Sync: cfg.Store.Sync, Logger: logger})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Error("close store", "err", err)
		}
	}()

	router := &live.Router{}
	ropt := cfg.Rules.Options(os.LookupEnv)
	rl := live.NewReloader(cfg.Rules.File, ropt, router, logger.With("component", "rules"), reg)
	if err := rl.Reload(); err != nil {
		return fmt.Errorf("rules: %w", err)
	}

	var hooks *webhook.Verifier
	if len(cfg.Webhooks.Secrets) > 0 {
		if hooks, err = webhook.NewVerifier(cfg.Webhooks.Secrets, cfg.Webhooks.Tolerance); err != nil {
			return fmt.Errorf("webhooks.secrets: %w", err)
		}
	}
	var signer *webhook.Signer
	if cfg.Forward.Secret != "" {
		if signer, err = webhook.NewSigner(cfg.Forward.Secret); err != nil {
			return fmt.Errorf("forward.secret: %w", err)
		}
	}
	fw, err := forward.New(forward.Config{
		Store:             st,
		Signer:            signer,
		Timeout:           cfg.Forward.Timeout,
		RetryHorizon:      cfg.Forward.RetryHorizon,
		InitialBackoff:    cfg.Forward.InitialBackoff,
		MaxBackoff:        cfg.Forward.MaxBackoff,
		Concurrency:       cfg.Forward.Concurrency,
		MaxPending:        cfg.Forward.MaxPending,
		MaxPendingBytes:   cfg.Forward.MaxPendingBytes,
		MaxPendingPerUser: cfg.Forward.MaxPendingPerUser,
		Logger:            logger,
	})
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}

	var streams engine.StreamStore // nil: no replay
	if cfg.Replay.MaxEvents > 0 {
		streams = st.Streams(cfg.Replay.MaxEvents, cfg.Replay.TTL)
	}
	checks := map[string]engine.Check{"rules": rl.Check}
	if verifier.HasKeySources() {
		checks["auth"] = verifier.Check
	}
	// Alone, or one node of several through Redis (engine/cluster).
	var node *cluster.Node
	var engStore engine.Store = st
	var pstore engine.PresenceStore = st
	var newBroker func(engine.Hub) (engine.Broker, error)
	var clusterPresence engine.ClusterPresence
	var relay engine.SessionRelay
	var clusterStats func() any
	if cfg.Broker.RedisURL != "" {
		b := cfg.Broker
		node, err = cluster.New(cluster.Options{
			URL:          b.RedisURL,
			NodeID:       b.NodeID,
			Prefix:       b.Prefix,
			Required:     b.OnUnavailable == "refuse",
			Heartbeat:    b.HeartbeatInterval,
			NodeTimeout:  b.NodeTimeout,
			PublishQueue: b.PublishQueue,
			Advertise:    advertiseURL(b.AdvertiseURL, ln.Addr()),
			Logger:       logger,
			Metrics:      reg,
		})
		if err != nil {
			return err
		}
		engStore, pstore = node.Store(st), node.PresenceStore(st)
		if streams != nil {
			streams = node.Streams(streams, cfg.Replay.MaxEvents, cfg.Replay.TTL)
		}
		newBroker, clusterPresence, relay, clusterStats = node.Broker, node, node, node.Stats
		checks["broker"] = node.Check
	} else {
		cluster.NewMetrics(reg) // the same figures alone: one dashboard for both
	}
	eng, err := engine.New(engine.Config{
		Logger:          logger,
		Auth:            verifier,
		Router:          router,
		Store:           engStore,
		NewBroker:       newBroker,
		ClusterPresence: clusterPresence,
		Relay:           relay,
		ClusterStats:    clusterStats,
		Forwarder:       fw,
		Webhooks:        hooks,
		Metrics:         reg,
		Origins:         cfg.Auth.Origins,
		AdminIf:         adminIf,
		APIKeys:         cfg.API.Keys,
		Limits: engine.Limits{
			MaxConnections:            cfg.Limits.MaxConnections,
			MaxMessageBytes:           cfg.Limits.MaxMessageBytes,
			OutboundQueueBytes:        cfg.Limits.OutboundQueueBytes,
			WriteTimeout:              cfg.Limits.WriteTimeout,
			HandshakeTimeout:          cfg.Limits.HandshakeTimeout,
			PingInterval:              cfg.Limits.PingInterval,
			IdleTimeout:               cfg.Limits.IdleTimeout,
			ClientEventsPerSecond:     cfg.Limits.ClientEventsPerSecond,
			ClientEventsBurst:         cfg.Limits.ClientEventsBurst,
			CloseTimeout:              cfg.Limits.CloseTimeout,
			SendBufferBytes:           cfg.Limits.SendBufferBytes,
			ConnectionsPerIPPerSecond: cfg.Limits.ConnectionsPerIPPerSecond,
			Workers:                   cfg.Limits.Workers,
			RuleWorkers:               cfg.Rules.Workers,
		},
		Webhook: engine.WebhookLimits{
			MaxBodyBytes: cfg.Webhooks.MaxBodyBytes,
			DedupTTL:     cfg.Webhooks.DedupTTL,
			Concurrency:  cfg.Webhooks.Concurrency,
		},
		Checks: checks,
		Presence: engine.PresenceOptions{
			Grace:          cfg.Presence.Grace,
			MaxWatch:       cfg.Presence.MaxWatch,
			Statuses:       cfg.Presence.Statuses,
			MaxStatusBytes: cfg.Presence.MaxStatusBytes,
			MaxQueryUsers:  cfg.Presence.MaxQueryUsers,
		},
		PresenceStore: pstore,
		Streams:       streams,
		Replay:        engine.ReplayOptions{Events: cfg.Replay.Events, Exclude: cfg.Replay.Exclude},
		SocketIO: engine.SocketIOOptions{
			PingInterval:   cfg.SocketIO.PingInterval,
			PingTimeout:    cfg.SocketIO.PingTimeout,
			MaxPayload:     cfg.SocketIO.MaxPayload,
			ConnectTimeout: cfg.SocketIO.ConnectTimeout,
		},
	})
	if err != nil {
		return err
	}

	rctx, stopRules := context.WithCancel(ctx)
	rulesDone, keysDone := make(chan error, 1), make(chan error, 1)
	// SIGHUP rereads both the rules file and the public key files.
	hups := fanOut(rctx, hup, 2)
	// The reloader watches the rules file until serve returns; the
	// verifier its key files and JWKS (neither waits for anything: a JWKS
	// endpoint down at start is retried while the node serves, degraded).
	go func() { rulesDone <- rl.Run(rctx, cfg.Rules.Watch, hups[0]) }()
	go func() { keysDone <- verifier.Run(rctx, hups[1]) }()
	// The node's cluster membership lasts until the engine has drained: it
	// leaves after, so that the others end its sessions after the grace.
	nctx, stopNode := context.WithCancel(context.WithoutCancel(ctx))
	nodeDone := make(chan struct{})
	go func() {
		defer close(nodeDone)
		if node != nil {
			node.Run(nctx, eng, cfg.Presence.Grace)
		}
	}()
	err = eng.Serve(ctx, ln)
	stopNode()
	<-nodeDone
	stopRules()
	if rerr := <-rulesDone; rerr != nil && !errors.Is(rerr, context.Canceled) {
		logger.Error("rules reloader", "err", rerr)
	}
	if kerr := <-keysDone; kerr != nil && !errors.Is(kerr, context.Canceled) {
		logger.Error("auth key sources", "err", kerr)
	}
	if err == nil {
		logger.Info("stopped")
	}
	return err
}

// fanOut copies each signal from in to n channels until ctx is done, so
// that several reloaders each get SIGHUP. A receiver still busy with the
// last one misses nothing: its channel holds one pending signal, and one
// reload covers several signals. A nil in gives n nil channels.
func fanOut(ctx context.Context, in <-chan os.Signal, n int) []<-chan os.Signal {
	outs := make([]<-chan os.Signal, n)
	if in == nil {
		return outs
	}
	chans := make([]chan os.Signal, n)
	for i := range chans {
		chans[i] = make(chan os.Signal, 1)
		outs[i] = chans[i]
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-in:
				for _, c := range chans {
					select {
					case c <- sig:
					default:
					}
				}
			}
		}
	}()
	return outs
}

// advertiseURL is where the other nodes reach this one: broker.advertise_url,
// else the listener's address, with the hostname for a wildcard one.
func advertiseURL(configured string, addr net.Addr) string {
	if configured != "" {
		return strings.TrimSuffix(configured, "/")
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return ""
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

// compileAdminIf compiles api.admin_if, an expr over claims, once.
func compileAdminIf(src string) (func(map[string]any) bool, error) {
	type env struct {
		Claims map[string]any `expr:"claims"`
	}
	prog, err := expr.Compile(src, expr.Env(env{}), expr.AsBool())
	if err != nil {
		return nil, fmt.Errorf("api.admin_if: %w", err)
	}
	return func(claims map[string]any) bool {
		out, err := expr.Run(prog, env{Claims: claims})
		ok, _ := out.(bool)
		return err == nil && ok
	}, nil
}

func newLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format: %q is not text or json", c.Format)
}
