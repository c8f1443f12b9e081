// Package aodcli implements the aod command's subcommands. Each writes to
// the injected Env, so tests can run them in-process.
package aodcli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/aodhq/aod/cmd/aod/app"
)

// Version is set at build time with -ldflags "-X ...aodcli.Version=...".
var Version = "dev"

// Env is the process environment a command runs in.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

const usage = `usage: aod <command> [flags]

commands:
  serve                         serve the API (default)
  migrate                       apply database migrations and exit
  users create NAME             create a user
  keys create --user NAME [--label L] [--expires RFC3339]
                                create an API key and print it once
  keys revoke PREFIX            deactivate the key(s) with this 12-char prefix
  version                       print the version
  dev fake-sprites --listen ADDR [--token T]
                                run the fake Sprites server (tests, benchmarks)
`

// MaybeRunHelper runs a helper process mode (the sandbox exec shim) when
// this process was started as one, then exits. Call it first in main.
func MaybeRunHelper() { maybeRunShim() }

// Run executes one command line and returns the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args, env)
	case "migrate":
		err = migrateCmd(ctx, args, env)
	case "users":
		err = usersCmd(ctx, args, env)
	case "keys":
		err = keysCmd(ctx, args, env)
	case "version", "--version", "-v":
		fmt.Fprintf(env.Stdout, "aod %s\n", Version)
	case "dev":
		err = devCmd(ctx, args, env)
	case "help", "-h", "--help":
		fmt.Fprint(env.Stdout, usage)
	default:
		fmt.Fprintf(env.Stderr, "aod: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "aod %s: %s\n", cmd, oneLine(err.Error()))
		return 1
	}
	return 0
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// newLogger builds the process logger: text or JSON on stderr.
func newLogger(cfg *app.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func loadConfig(env Env) (*app.Config, *slog.Logger, error) {
	cfg, err := app.LoadConfig(env.Getenv)
	if err != nil {
		return nil, nil, err
	}
	return cfg, newLogger(cfg, env.Stderr), nil
}

func newFlagSet(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}
