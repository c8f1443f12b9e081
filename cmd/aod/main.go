// Command aod is the aod control plane: `aod serve` (the default), `aod
// migrate`, `aod users create`, `aod keys create|revoke`, `aod version` and
// the developer tools under `aod dev`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/aodhq/aod/cmd/aod/aodcli"
)

func main() {
	aodcli.MaybeRunHelper()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := aodcli.Run(ctx, os.Args[1:], aodcli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
