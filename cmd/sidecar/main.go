// Command sidecar is a real-time notification server that runs next to a
// web app: browsers hold a WebSocket to it, the app posts signed webhooks,
// and YAML rules decide who hears what.
//
//	sidecar [serve] [--config FILE]   run the server (the default)
//	sidecar token --sub ID [--role R] mint a development JWT
//	sidecar check [--config FILE]     validate config and rules
//	sidecar test FILE...              run rule test files
//	sidecar webhook --type T --data J sign and post a webhook
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "sidecar:", err)
		}
		os.Exit(1)
	}
}

// errReported is returned by a subcommand that has already told the user
// what went wrong; main only sets the exit status.
var errReported = errors.New("reported")

// run dispatches a subcommand. It is main without the process: tests call
// it with their own arguments and writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return runServe(ctx, args, stdout, stderr)
	case "token":
		return runToken(ctx, args, stdout, stderr)
	case "check":
		return runCheck(ctx, args, stdout, stderr)
	case "test":
		return runTest(ctx, args, stdout, stderr)
	case "webhook":
		return runWebhook(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "sidecar: unknown command %q\n\n%s", cmd, usage)
	return errReported
}

const usage = `usage:
  sidecar [serve] [--config FILE]      run the server (default command)
  sidecar token --sub ID [--role ROLE] [--ttl 24h] [--config FILE]
                                       print a development JWT signed with auth.jwt_secret
  sidecar check [--config FILE]        validate the config and the rules file; exit 1 with file:line on error
  sidecar test FILE...                 run rule test files
  sidecar webhook --type T [--data JSON|@file] [--id ID] [--config FILE] [--url URL]
                                       sign an event with webhooks.secrets and post it
`
