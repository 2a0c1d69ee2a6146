package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

// command is one subcommand as help shows it.
type command struct {
	name     string
	synopsis string // the arguments, after "sidecar NAME"
	what     string // one line: what it does
}

// commands are the subcommands, in the order help lists them.
var commands = []command{
	{"serve", "[--config FILE]", "run the server (the default command)"},
	{"token", "--sub ID [--role ROLE] [--ttl 24h] [--config FILE]", "print a development JWT signed with auth.jwt_secret"},
	{"check", "[--config FILE] [--strict TESTFILE...]", "validate the config and the rules file; file:line errors and exit 1"},
	{"test", "FILE...", "run rule test files: an event in, the outputs expected"},
	{"webhook", "--type TYPE [--data JSON|@FILE] [--id ID] [--config FILE] [--url URL]\n       sidecar webhook --print-secret [--config FILE]",
		"sign an event with webhooks.secrets and post it to a running sidecar"},
	{"help", "[COMMAND]", "list the commands, or show one command's flags"},
}

func lookupCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// printUsage lists the commands, one line each.
func printUsage(w io.Writer) {
	fmt.Fprint(w, "sidecar: a real-time notification server (WebSocket, signed webhooks, YAML rules)\n\n"+
		"usage: sidecar COMMAND [flags]\n\ncommands:\n")
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.what)
	}
	tw.Flush()
	fmt.Fprint(w, "\nsidecar COMMAND -h shows a command's flags. README.md has a five-minute tour.\n")
}

// newFlags is the flag set of a subcommand. Parse it with parseFlags.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parseFlags prints, to stdout or stderr
	fs.Usage = func() {}
	return fs
}

// parseFlags parses a subcommand's args. With -h it prints the command's
// usage and flags on stdout, and the command ends with no error; with a
// bad flag it prints the problem and the usage on stderr, and the command
// fails. ok is true when the command should run.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (ok bool, err error) {
	perr := fs.Parse(args)
	switch {
	case perr == nil:
		return true, nil
	case errors.Is(perr, flag.ErrHelp):
		commandUsage(fs, stdout)
		return false, nil
	}
	fmt.Fprintf(stderr, "sidecar %s: %v\n\n", fs.Name(), perr)
	commandUsage(fs, stderr)
	return false, errReported
}

func commandUsage(fs *flag.FlagSet, w io.Writer) {
	c := lookupCommand(fs.Name())
	if c == nil {
		c = &command{name: fs.Name()}
	}
	fmt.Fprintf(w, "usage: sidecar %s %s\n\n%s\n", c.name, c.synopsis, c.what)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nflags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}
