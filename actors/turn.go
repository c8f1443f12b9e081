package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/runtimes"
	"github.com/aodhq/aod/sprites"
)

// turnRun is one turn's exec: it streams the agent's output into the log
// and records the outcome. It runs in a goroutine owned by the actor.
type turnRun struct {
	a      *sessionActor
	s      *persistence.Session
	t      *persistence.Turn
	n      int
	dec    [3]textDecoder // by sprites.Stream
	base   sprites.Offsets
	execID string
}

// runTurn executes (or, after a restart, re-attaches to) a turn.
func (a *sessionActor) runTurn(ctx context.Context, s *persistence.Session, t *persistence.Turn, recovering bool) {
	r := &turnRun{a: a, s: s, t: t, n: t.TurnNumber}
	r.run(ctx, recovering && t.Status == persistence.StatusRunning)
}

func (r *turnRun) run(ctx context.Context, reattach bool) {
	a, b := r.a, r.a.m.deps.Backend
	r.a.m.metrics.started.WithLabelValues(r.s.Runtime).Inc()
	if b == nil {
		r.finish(persistence.StatusFailed, nil, "turn failed: no sandbox backend is configured\n")
		return
	}
	var exec sprites.Exec
	var err error
	if reattach {
		exec, err = r.reattach(ctx)
		if err != nil {
			if r.stopping() {
				return
			}
			r.finish(persistence.StatusFailed, nil, "turn failed: "+err.Error()+"\n")
			return
		}
	} else {
		if st, _, serr := a.m.deps.DB.SessionStatus(ctx, r.s.ID); serr == nil && st == persistence.StatusTerminated {
			r.finish(persistence.StatusFailed, nil, "turn aborted: session terminated before execution started\n")
			return
		}
		if _, err := b.Get(ctx, r.s.BackendHandle); err != nil {
			if r.stopping() {
				return
			}
			r.finish(persistence.StatusFailed, nil, fmt.Sprintf("turn failed: Sprite not found: %v\n", err))
			return
		}
		if exec, err = r.start(ctx); err != nil {
			if r.stopping() {
				return
			}
			r.finish(persistence.StatusFailed, nil, fmt.Sprintf("turn failed: %v\n", err))
			return
		}
	}
	defer exec.Close()
	r.stream(ctx, exec)
}

// stopping reports that the node is shutting down: work is abandoned
// without recording an outcome, to be resumed by the next start.
func (r *turnRun) stopping() bool { return r.a.ctx.Err() != nil }

// start marks the turn running and starts the agent CLI.
func (r *turnRun) start(ctx context.Context) (sprites.Exec, error) {
	a := r.a
	agent, err := r.agent(ctx)
	if err != nil {
		return nil, err
	}
	mode := runtimes.Run
	if r.t.Mode == string(runtimes.Continue) {
		mode = runtimes.Continue
	}
	rt, ok := runtimes.Parse(r.s.Runtime)
	if !ok {
		return nil, fmt.Errorf("unknown runtime %q", r.s.Runtime)
	}
	argv := runtimes.Argv(runtimes.TurnSpec{Runtime: rt, Provider: agent.Provider, Model: agent.Model,
		RuntimeSessionID: r.s.RuntimeSessionID, Mode: mode})
	started := time.Now().UTC().Truncate(time.Microsecond)
	r.t.StartedAt = &started
	err = a.writer.submitWait(ctx, &logOp{
		events: []*persistence.Event{{SessionID: r.s.ID, Kind: persistence.KindStage, Stage: runtimes.StageRuntimeStart, State: "started"}},
		updates: []persistence.Update{
			persistence.SetTurn(r.t.ID, map[string]any{"status": persistence.StatusRunning, "started_at": started}),
			persistence.SetSession(r.s.ID, map[string]any{"status": persistence.StatusRunning, "exit_code": nil}, true),
		},
	})
	if err != nil {
		return nil, err
	}
	exec, err := a.m.deps.Backend.Exec(ctx, r.s.BackendHandle, sprites.ExecRequest{
		Argv: argv, Dir: runtimes.WorkDir, Stdin: []byte(r.t.Stdin()),
	})
	if err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	r.execID = exec.ID()
	// The exec id is durable before any output, so a restart can re-attach.
	if err := a.writer.submitWait(ctx, &logOp{updates: []persistence.Update{
		persistence.SetTurn(r.t.ID, map[string]any{"exec_id": r.execID}),
	}}); err != nil {
		exec.Close()
		return nil, err
	}
	a.m.engine.Send(a.pid, &execStarted{gen: a.entry.gen, execID: r.execID})
	return exec, nil
}

func (r *turnRun) agent(ctx context.Context) (*persistence.Agent, error) {
	if r.s.AgentID == nil {
		return nil, errors.New("the session's agent no longer exists")
	}
	return r.a.m.deps.DB.AgentGet(ctx, r.s.UserID, *r.s.AgentID)
}

// reattach re-opens the exec of a turn that was running when aod stopped,
// skipping the bytes already in the log (D5).
func (r *turnRun) reattach(ctx context.Context) (sprites.Exec, error) {
	if r.t.ExecID == "" {
		return nil, errors.New("aod stopped before the agent process was recorded; its output is lost")
	}
	r.base = sprites.Offsets{Stdout: r.t.StdoutOffset, Stderr: r.t.StderrOffset}
	exec, err := r.a.m.deps.Backend.Attach(ctx, r.s.BackendHandle, r.t.ExecID, r.base)
	if err != nil {
		if errors.Is(err, sprites.ErrNotFound) {
			return nil, fmt.Errorf("the agent process (exec %s) is gone: it ended while aod was down and cannot be re-attached", r.t.ExecID)
		}
		return nil, fmt.Errorf("re-attach to the agent process (exec %s): %w", r.t.ExecID, err)
	}
	r.execID = r.t.ExecID
	r.a.m.engine.Send(r.a.pid, &execStarted{gen: r.a.entry.gen, execID: r.execID})
	return exec, nil
}

// deadline is when the turn times out: its timeout counted from its stored
// start (D20).
func (r *turnRun) deadline() time.Time {
	start := time.Now()
	if r.t.StartedAt != nil {
		start = *r.t.StartedAt
	}
	return start.Add(time.Duration(r.t.TimeoutSeconds) * time.Second)
}

// stream copies the exec's output into the log until it exits, times out,
// or the session is terminated.
func (r *turnRun) stream(ctx context.Context, exec sprites.Exec) {
	readCtx, cancel := context.WithDeadline(ctx, r.deadline())
	defer cancel()
	for {
		ev, err := exec.Next(readCtx)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			r.flush(ctx)
			r.finish(persistence.StatusFailed, nil, "turn failed: the agent's output ended without an exit status\n")
			return
		case r.stopping():
			return
		case ctx.Err() != nil: // terminated
			r.finish(persistence.StatusFailed, nil, "")
			return
		case readCtx.Err() != nil: // timed out
			r.timeout(ctx, exec)
			return
		default:
			if !r.flush(ctx) {
				return
			}
			r.finish(persistence.StatusFailed, nil, fmt.Sprintf("turn failed: lost the agent's output stream: %v\n", err))
			return
		}
		if ev.Exited {
			if !r.flush(ctx) {
				return
			}
			code := ev.ExitCode
			status := persistence.StatusCompleted
			if code != 0 {
				status = persistence.StatusFailed
			}
			r.finish(status, &code, "")
			return
		}
		if !r.output(ctx, ev.Stream, r.dec[ev.Stream].decode(ev.Data)) {
			return
		}
	}
}

// output appends one chunk (blocking while the writer is behind).
func (r *turnRun) output(ctx context.Context, stream sprites.Stream, text string) bool {
	if text == "" {
		return true
	}
	n := r.n
	err := r.a.writer.submit(ctx, &logOp{
		events: []*persistence.Event{{SessionID: r.s.ID, Turn: &n, Kind: persistence.KindOutput, Stream: stream.String(), Data: text}},
		offsets: &turnOffsets{turnID: r.t.ID,
			stdout: r.base.Stdout + r.dec[sprites.Stdout].consumed,
			stderr: r.base.Stderr + r.dec[sprites.Stderr].consumed},
	})
	return err == nil
}

// flush emits bytes held back by the decoders.
func (r *turnRun) flush(ctx context.Context) bool {
	for _, st := range []sprites.Stream{sprites.Stdout, sprites.Stderr} {
		if !r.output(ctx, st, r.dec[st].flush()) {
			return false
		}
	}
	return true
}

// timeout kills the exec, gives it a moment to report its exit, then fails
// the turn with a null exit code.
func (r *turnRun) timeout(ctx context.Context, exec sprites.Exec) {
	kctx, cancel := context.WithTimeout(context.Background(), r.a.m.deps.Config.KillGrace)
	defer cancel()
	_ = r.a.m.deps.Backend.Kill(kctx, r.s.BackendHandle, r.execID, "KILL")
	for {
		ev, err := exec.Next(kctx)
		if err != nil || ev.Exited {
			break
		}
		if !r.output(ctx, ev.Stream, r.dec[ev.Stream].decode(ev.Data)) {
			return
		}
	}
	r.flush(ctx)
	r.finish(persistence.StatusFailed, nil, fmt.Sprintf("turn failed: timed out after %ds\n", r.t.TimeoutSeconds))
}

// finish records the turn's outcome and the session's status (never
// overwriting terminated), then tells the actor the work is over.
func (r *turnRun) finish(status string, code *int, stderr string) {
	n := r.n
	var events []*persistence.Event
	if stderr != "" {
		events = append(events, &persistence.Event{SessionID: r.s.ID, Turn: &n, Kind: persistence.KindOutput, Stream: "stderr", Data: stderr})
	}
	var exit any
	if code != nil {
		exit = *code
	}
	ended := time.Now().UTC().Truncate(time.Microsecond)
	op := &logOp{
		events: events,
		updates: []persistence.Update{
			persistence.SetTurn(r.t.ID, map[string]any{"status": status, "exit_code": exit, "ended_at": ended}),
			persistence.SetSession(r.s.ID, map[string]any{"status": status, "exit_code": exit}, true),
		},
		note: &workFinished{},
	}
	m := r.a.m.metrics
	m.finished.WithLabelValues(r.s.Runtime, status).Inc()
	if r.t.StartedAt != nil {
		m.turnDuration.WithLabelValues(r.s.Runtime).Observe(time.Since(*r.t.StartedAt).Seconds())
	}
	// The work context may be cancelled (terminate); the record is still
	// written while the actor lives.
	if err := r.a.writer.submit(r.a.ctx, op); err != nil {
		r.a.m.log.Warn("record turn outcome", "session", r.s.ID, "error", err.Error())
	}
}
