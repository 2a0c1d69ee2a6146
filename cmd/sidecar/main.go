// Command sidecar is a real-time notification server that runs next to a
// web app: browsers hold a WebSocket to it, the app posts signed webhooks,
// and YAML rules decide who hears what.
//
//	sidecar [serve] [--config FILE]   run the server (the default)
//	sidecar token --sub ID [--role R] mint a development JWT
//	sidecar check [--config FILE]     validate config and rules
//	sidecar test FILE...              run rule test files
//	sidecar webhook --type T --data J sign and post a webhook
//	sidecar help [COMMAND]            the commands, or one command's flags
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
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "-h" || a == "-help" || a == "--help":
			cmd, args = "help", args[1:]
		case len(a) > 0 && a[0] != '-':
			cmd, args = a, args[1:]
		}
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
	case "help":
		if len(args) > 0 && args[0] != "help" && lookupCommand(args[0]) != nil {
			return run(ctx, []string{args[0], "-h"}, stdout, stderr) // help CMD: CMD's flags
		}
		printUsage(stdout)
		return nil
	}
	fmt.Fprintf(stderr, "sidecar: unknown command %q\n\n", cmd)
	printUsage(stderr)
	return errReported
}
