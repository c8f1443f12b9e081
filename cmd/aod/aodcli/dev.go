package aodcli

import (
	"context"
	"errors"

	"github.com/aodhq/aod/sprites/runner"
)

func devCmd(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("usage: aod dev fake-sprites --listen ADDR [--token T]")
	}
	switch args[0] {
	case "fake-sprites":
		return fakeSprites(ctx, args[1:], env)
	}
	return errors.New("unknown dev command " + args[0])
}

// maybeRunShim turns this process into a sandbox exec shim when it was
// started as one (the local backend and the fake server start execs
// through this binary).
func maybeRunShim() { runner.MaybeRunShim() }

func fakeSprites(ctx context.Context, args []string, env Env) error {
	return fakeSpritesCmd(ctx, args, env)
}
