package aodcli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aodhq/aod/cmd/aod/app"
)

// serve runs a node until ctx ends (SIGTERM/SIGINT), then shuts down in
// order under a watchdog.
func serve(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("serve", env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, log, err := loadConfig(env)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, log, app.Options{Out: env.Stdout, Version: Version})
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		_ = a.Stop(context.Background())
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-a.Done():
		if err != nil {
			_ = a.Stop(context.Background())
			return fmt.Errorf("http server: %w", err)
		}
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Stop(stopCtx); err != nil {
		log.Error("shutdown", slog.String("error", err.Error()))
		return err
	}
	log.Info("stopped")
	return nil
}
