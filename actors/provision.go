package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/runtimes"
	"github.com/aodhq/aod/sprites"
)

// provisionRun prepares a session's sandbox in the eight stages of
// aod-api.md §7.1, each logged as started/done/failed stage events.
type provisionRun struct {
	a             *sessionActor
	s             *persistence.Session
	t             *persistence.Turn
	created       bool
	createStarted bool

	agent   *persistence.Agent
	env     *persistence.Environment
	repos   []persistence.Resource
	secrets map[string]string
	rt      runtimes.Runtime
	skills  []any
	mcp     []any
}

// stageError fails a stage with the session's failure message.
type stageError struct{ msg string }

func (e *stageError) Error() string { return e.msg }

func (a *sessionActor) provision(ctx context.Context, s *persistence.Session, t *persistence.Turn) {
	p := &provisionRun{a: a, s: s, t: t}
	err := p.run(ctx)
	switch {
	case err == nil:
		now := time.Now().UTC().Truncate(time.Microsecond)
		_ = a.writer.submit(a.ctx, &logOp{
			updates: []persistence.Update{persistence.SetSession(s.ID, map[string]any{"provisioned_at": now}, true)},
			note:    &provisioned{},
		})
	case a.ctx.Err() != nil:
		// Node shutdown: the next start provisions again (D20).
	case ctx.Err() != nil || errors.Is(err, errTerminated):
		// Terminated. The terminate path destroys the sandbox it knew of;
		// one this run may have been creating meanwhile is deleted here.
		// It is recorded again (durably), since the janitor may have found
		// it missing before the create completed.
		if p.createStarted {
			dctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
			if err := a.m.destroyLater(dctx, s.Backend, s.BackendHandle); err != nil {
				a.m.log.Error("record sandbox destroy", slog.String("sandbox", s.BackendHandle), slog.String("error", err.Error()))
			}
			cancel()
		}
		_ = a.writer.submit(a.ctx, &logOp{note: &workFinished{}})
	default:
		p.fail(err)
	}
}

// errTerminated stops provisioning of a session terminated meanwhile.
var errTerminated = errors.New("session terminated")

func (p *provisionRun) run(ctx context.Context) error {
	// A provisioning job that finds the session terminated does nothing.
	if st, _, err := p.a.m.deps.DB.SessionStatus(ctx, p.s.ID); err == nil && st == persistence.StatusTerminated {
		return errTerminated
	}
	if err := p.load(ctx); err != nil {
		return &stageError{msg: runtimes.PrepareFailed(err)}
	}
	b := p.a.m.deps.Backend
	handle := p.s.BackendHandle
	if err := p.stage(ctx, runtimes.StageCreateSprite, func() error {
		// Idempotent after a restart (D20): a sandbox left behind under the
		// same name is replaced.
		if _, err := b.Get(ctx, handle); err == nil {
			if err := b.Delete(ctx, handle); err != nil && !errors.Is(err, sprites.ErrNotFound) {
				return &stageError{msg: runtimes.CreateSpriteFailed(err)}
			}
		}
		p.createStarted = true
		if _, err := b.Create(ctx, handle); err != nil {
			return &stageError{msg: runtimes.CreateSpriteFailed(err)}
		}
		p.created = true
		return nil
	}); err != nil {
		return err
	}
	if err := p.stage(ctx, runtimes.StageInstallRuntime, func() error {
		argv := runtimes.InstallCommand(p.rt)
		if argv == nil {
			return nil
		}
		// A non-zero exit of the optional installer is ignored (§7.1);
		// a transport failure is not.
		if _, _, err := p.exec(ctx, argv); err != nil {
			return &stageError{msg: runtimes.InstallRuntimeFailed(err)}
		}
		return nil
	}); err != nil {
		return err
	}
	if p.env != nil && p.env.NetworkingType == "limited" {
		if err := p.stage(ctx, runtimes.StageNetworkPolicy, func() error {
			var cfg struct {
				AllowedHosts []string `json:"allowed_hosts"`
			}
			_ = json.Unmarshal(p.env.NetworkingConfig, &cfg)
			policy := sprites.NetworkPolicy{Rules: runtimes.NetworkRules(cfg.AllowedHosts)}
			if err := b.SetNetworkPolicy(ctx, handle, policy); err != nil {
				return &stageError{msg: runtimes.NetworkPolicyFailed(err)}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	envVars := map[string]string{}
	if p.env != nil {
		envVars = p.env.EnvVars
	}
	if err := p.stage(ctx, runtimes.StageEnvFile, func() error {
		var static []runtimes.EnvVar
		for _, kv := range p.a.m.deps.StaticEnv {
			static = append(static, runtimes.EnvVar{Name: kv[0], Value: kv[1]})
		}
		data := runtimes.EnvFile(static, p.s.RuntimeSessionID, p.agent.Model, envVars, p.secrets)
		if err := b.WriteFile(ctx, handle, runtimes.EnvFilePath, data, 0o600); err != nil {
			return &stageError{msg: runtimes.PrepareFailed(err)}
		}
		return nil
	}); err != nil {
		return err
	}
	var tokens []string
	var repos []runtimes.Repo
	for _, r := range p.repos {
		if r.Token != "" {
			tokens = append(tokens, r.Token)
		}
		repos = append(repos, runtimes.Repo{URL: r.URL, MountPath: r.MountPath, Token: r.Token})
	}
	if len(tokens) > 0 {
		if err := p.stage(ctx, runtimes.StageGitCredentials, func() error {
			if err := b.WriteFile(ctx, handle, runtimes.GitCredentialsPath, runtimes.GitCredentials(tokens), 0o600); err != nil {
				return &stageError{msg: runtimes.PrepareFailed(err)}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := p.stage(ctx, runtimes.StageProvisionSetup, func() error {
		params := runtimes.ProvisionParams{Runtime: p.rt, MCPServers: p.mcp, Skills: p.skills, Repos: repos}
		if p.env != nil {
			_ = json.Unmarshal(p.env.Packages, &params.Packages)
			params.SetupScript = p.env.SetupScript
		}
		if err := b.WriteFile(ctx, handle, runtimes.ProvisionScriptPath, runtimes.ProvisionScript(params), 0o700); err != nil {
			return &stageError{msg: runtimes.PrepareFailed(err)}
		}
		code, stderr, err := p.exec(ctx, runtimes.ProvisionArgv())
		if err != nil {
			return &stageError{msg: runtimes.ProvisionScriptFailed(err, stderr)}
		}
		if code != 0 {
			return &stageError{msg: runtimes.ProvisionScriptFailed(fmt.Errorf("exit %d", code), stderr)}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := p.stage(ctx, runtimes.StageRuntimeConfig, func() error {
		files, err := runtimes.ConfigFiles(p.rt, p.mcp, p.secrets, envVars)
		if err != nil {
			return &stageError{msg: runtimes.RuntimeConfigFailed(err)}
		}
		for _, f := range files {
			if err := b.WriteFile(ctx, handle, f.Path, f.Data, f.Mode); err != nil {
				return &stageError{msg: runtimes.RuntimeConfigFailed(err)}
			}
			if f.Mode&0o077 == 0 { // e.g. codex auth.json: make sure of 0600
				if err := b.Chmod(ctx, handle, f.Path, f.Mode); err != nil {
					return &stageError{msg: runtimes.RuntimeConfigFailed(err)}
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if len(p.skills) > 0 {
		if err := p.stage(ctx, runtimes.StageSkills, func() error {
			for _, f := range runtimes.InlineSkillFiles(p.rt, p.skills) {
				if err := b.WriteFile(ctx, handle, f.Path, f.Data, f.Mode); err != nil {
					return &stageError{msg: runtimes.SkillsFailed(err)}
				}
			}
			for _, argv := range runtimes.GitHubSkillCommands(p.rt, p.skills) {
				if _, _, err := p.exec(ctx, argv); err != nil {
					return &stageError{msg: runtimes.SkillsFailed(err)}
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// load reads what provisioning needs.
func (p *provisionRun) load(ctx context.Context) error {
	db := p.a.m.deps.DB
	if p.s.AgentID == nil {
		return errors.New("the session's agent no longer exists")
	}
	var err error
	if p.agent, err = db.AgentGet(ctx, p.s.UserID, *p.s.AgentID); err != nil {
		return fmt.Errorf("load agent: %w", err)
	}
	if p.s.EnvironmentID != nil {
		if p.env, err = db.EnvironmentGet(ctx, p.s.UserID, *p.s.EnvironmentID); err != nil {
			return fmt.Errorf("load environment: %w", err)
		}
	}
	if p.repos, err = db.SessionResources(ctx, p.s.ID); err != nil {
		return err
	}
	if p.secrets, err = db.SessionSecretEnvVars(ctx, p.s.ID); err != nil {
		return err
	}
	rt, ok := runtimes.Parse(p.s.Runtime)
	if !ok {
		return fmt.Errorf("unknown runtime %q", p.s.Runtime)
	}
	p.rt = rt
	_ = json.Unmarshal(p.agent.Skills, &p.skills)
	_ = json.Unmarshal(p.agent.MCPServers, &p.mcp)
	return nil
}

// stage runs fn between a started and a done/failed stage event.
func (p *provisionRun) stage(ctx context.Context, name string, fn func() error) error {
	w := p.a.writer
	if err := w.submit(ctx, &logOp{events: []*persistence.Event{p.stageEvent(name, "started", nil, "")}}); err != nil {
		return err
	}
	start := time.Now()
	err := fn()
	ms := time.Since(start).Milliseconds()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		var se *stageError
		msg := err.Error()
		if errors.As(err, &se) {
			msg = se.msg
		}
		_ = w.submit(ctx, &logOp{events: []*persistence.Event{p.stageEvent(name, "failed", &ms, msg)}})
		return &stageError{msg: msg}
	}
	return w.submit(ctx, &logOp{events: []*persistence.Event{p.stageEvent(name, "done", &ms, "")}})
}

func (p *provisionRun) stageEvent(name, state string, ms *int64, msg string) *persistence.Event {
	return &persistence.Event{SessionID: p.s.ID, Kind: persistence.KindStage, Stage: name, State: state, DurationMS: ms, Data: msg}
}

// exec runs a provisioning command to completion, returning its exit code
// and stderr.
func (p *provisionRun) exec(ctx context.Context, argv []string) (int, []byte, error) {
	ex, err := p.a.m.deps.Backend.Exec(ctx, p.s.BackendHandle, sprites.ExecRequest{Argv: argv, Dir: runtimes.WorkDir})
	if err != nil {
		return 0, nil, err
	}
	defer ex.Close()
	var stderr []byte
	for {
		ev, err := ex.Next(ctx)
		if errors.Is(err, io.EOF) {
			return 0, stderr, errors.New("command ended without an exit status")
		}
		if err != nil {
			return 0, stderr, err
		}
		if ev.Exited {
			return ev.ExitCode, stderr, nil
		}
		if ev.Stream == sprites.Stderr {
			stderr = append(stderr, ev.Data...)
			if len(stderr) > 64<<10 {
				stderr = stderr[len(stderr)-8<<10:]
			}
		}
	}
}

// fail records a provisioning failure: the session and turn 1 fail, a
// stderr event says why, and the sandbox (if its create was attempted) is
// recorded as destroy pending in the same transaction that forgets its
// handle; the janitor deletes it.
func (p *provisionRun) fail(err error) {
	msg := err.Error()
	var destroy []persistence.Update
	if p.createStarted {
		destroy = append(destroy, persistence.DestroySandbox(p.s.Backend, p.s.BackendHandle))
		defer p.a.m.Destroy(p.s.BackendHandle)
	}
	n := p.t.TurnNumber
	ended := time.Now().UTC().Truncate(time.Microsecond)
	_ = p.a.writer.submit(p.a.ctx, &logOp{
		events: []*persistence.Event{{SessionID: p.s.ID, Turn: &n, Kind: persistence.KindOutput, Stream: "stderr",
			Data: "provision failed: " + msg + "\n"}},
		updates: append([]persistence.Update{
			persistence.SetTurnIf(p.t.ID, []string{persistence.StatusPending, persistence.StatusRunning},
				map[string]any{"status": persistence.StatusFailed, "exit_code": nil, "ended_at": ended}, nil),
			persistence.SetSession(p.s.ID, map[string]any{"status": persistence.StatusFailed, "exit_code": nil, "backend_handle": ""}, true),
		}, destroy...),
		note: &workFinished{},
	})
}
