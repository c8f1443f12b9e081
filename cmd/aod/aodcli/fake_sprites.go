package aodcli

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"path/filepath"

	"github.com/aodhq/aod/cmd/aod/app"
	"github.com/aodhq/aod/sprites/runner"
	"github.com/aodhq/aod/sprites/spritestest"
)

// fakeSpritesCmd runs `aod dev fake-sprites --listen ADDR [--token T]
// [--dir D]`: the fake Sprites server (package spritestest) until ctx ends.
// The token defaults to $SPRITES_API_KEY; the data directory to
// $AOD_DATA_DIR/fake-sprites (or a directory under the system temp dir).
// Sandboxes follow $AOD_LOCAL_NETWORK and the AOD_LOCAL_* limits like the
// local backend.
//
// Wiring (dev.go): fakeSprites should call fakeSpritesCmd, and maybeRunShim
// should call runner.MaybeRunShim (the fake starts execs through the shim
// in this binary).
func fakeSpritesCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("dev fake-sprites", env)
	listen := fs.String("listen", "127.0.0.1:8787", "listen address")
	token := fs.String("token", "", "bearer token clients must send (default $SPRITES_API_KEY)")
	dir := fs.String("dir", "", "data directory (default $AOD_DATA_DIR/fake-sprites)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok := cmp.Or(*token, env.Getenv("SPRITES_API_KEY"))
	if tok == "" {
		return errors.New("no token: pass --token or set SPRITES_API_KEY")
	}
	d := *dir
	if d == "" && env.Getenv("AOD_DATA_DIR") != "" {
		d = filepath.Join(env.Getenv("AOD_DATA_DIR"), "fake-sprites")
	}
	logger := slog.New(slog.NewTextHandler(env.Stderr, nil))
	cfg, err := app.LoadConfig(env.Getenv)
	if err != nil {
		return err
	}
	binds := cfg.RunnerBinds()
	return spritestest.ListenAndServe(ctx, *listen, tok, spritestest.Options{
		Dir:          d,
		Logger:       logger,
		RunnerConfig: runner.Config{Network: env.Getenv("AOD_LOCAL_NETWORK"), ExtraBinds: binds, Limits: cfg.LocalLimits, Logger: logger},
	})
}
