package aodcli

import (
	"context"
	"errors"
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

// maybeRunShim is replaced when the sandbox runner is wired in.
func maybeRunShim() {}

func fakeSprites(ctx context.Context, args []string, env Env) error {
	return errors.New("fake-sprites: not built into this binary yet")
}
