package aodcli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aodhq/aod/cmd/aod/app"
	"github.com/aodhq/aod/persistence"
)

func openMigrated(ctx context.Context, env Env) (*persistence.DB, error) {
	cfg, log, err := loadConfig(env)
	if err != nil {
		return nil, err
	}
	db, err := app.OpenDB(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	if _, err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func migrateCmd(ctx context.Context, args []string, env Env) error {
	if len(args) > 0 {
		return fmt.Errorf("migrate takes no arguments")
	}
	cfg, log, err := loadConfig(env)
	if err != nil {
		return err
	}
	db, err := app.OpenDB(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(env.Stdout, "database is up to date")
		return nil
	}
	for _, m := range applied {
		fmt.Fprintf(env.Stdout, "applied %s\n", m)
	}
	return nil
}

func usersCmd(ctx context.Context, args []string, env Env) error {
	if len(args) != 2 || args[0] != "create" || args[1] == "" {
		return errors.New("usage: aod users create NAME")
	}
	db, err := openMigrated(ctx, env)
	if err != nil {
		return err
	}
	defer db.Close()
	u, err := db.UserCreate(ctx, args[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "created user %q (id %d)\n", u.Username, u.ID)
	return nil
}

func keysCmd(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		return errors.New("usage: aod keys create --user NAME [--label L] [--expires RFC3339] | aod keys revoke PREFIX")
	}
	switch args[0] {
	case "create":
		fs := newFlagSet("keys create", env)
		user := fs.String("user", "", "user name (required)")
		label := fs.String("label", "", "key label, at most 100 characters")
		expires := fs.String("expires", "", "expiry time, RFC 3339")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *user == "" || fs.NArg() > 0 {
			return errors.New("usage: aod keys create --user NAME [--label L] [--expires RFC3339]")
		}
		if len([]rune(*label)) > 100 {
			return errors.New("--label must be at most 100 characters")
		}
		var exp *time.Time
		if *expires != "" {
			t, err := time.Parse(time.RFC3339, *expires)
			if err != nil {
				return fmt.Errorf("--expires must be RFC 3339 (e.g. 2027-01-02T15:04:05Z): %w", err)
			}
			t = t.UTC()
			exp = &t
		}
		db, err := openMigrated(ctx, env)
		if err != nil {
			return err
		}
		defer db.Close()
		u, err := db.UserGetByName(ctx, *user)
		if err != nil {
			return err
		}
		raw, k, err := db.APIKeyCreate(ctx, &persistence.APIKeyCreateParams{UserID: u.ID, Name: *label, ExpiresAt: exp})
		if err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, raw)
		fmt.Fprintf(env.Stderr, "created key %s… for %q; it is shown only once\n", k.KeyPrefix, u.Username)
		return nil
	case "revoke":
		if len(args) != 2 || len(args[1]) != persistence.KeyPrefixLen {
			return fmt.Errorf("usage: aod keys revoke PREFIX (the key's first %d characters)", persistence.KeyPrefixLen)
		}
		db, err := openMigrated(ctx, env)
		if err != nil {
			return err
		}
		defer db.Close()
		n, err := db.APIKeyRevoke(ctx, args[1])
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no active key with prefix %s", args[1])
		}
		fmt.Fprintf(env.Stdout, "revoked %d key(s) with prefix %s\n", n, args[1])
		return nil
	}
	return fmt.Errorf("unknown keys command %q", args[0])
}
