package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/runtimes"
	"github.com/aodhq/aod/sprites"
)

// exitGrace is how long a turn past its deadline keeps reading before it
// kills the exec: an exec that has already exited (for example while aod
// was down) reports its remaining output and its real exit code at once.
const exitGrace = 2 * time.Second

// errTurnTerminated: the turn's guarded pending→running update matched no
// row, because terminate failed the turn first.
var errTurnTerminated = errors.New("actors: the turn was terminated before it started")

// turnRun is one turn's exec: it streams the agent's output into the log
// and records the outcome. It runs in a goroutine owned by the actor.
//
// Rule: run ends with exactly one recorded outcome (finish), unless the
// work is abandoned — the node is stopping or the session's log writer has
// stopped — in which case nothing is recorded and the next start resumes
// from the durable state (re-attach from the stored offsets).
type turnRun struct {
	a      *sessionActor
	s      *persistence.Session
	t      *persistence.Turn
	n      int
	dec    [3]textDecoder // by sprites.Stream
	base   sprites.Offsets
	execID string
	exec   sprites.Exec

	// Output stored so far, against the caps.
	turnBytes, sessionBytes int64
	// lost counts the consecutive stream losses and re-attach attempts
	// without output in between.
	lost int

	// mu orders dev publishes (D19) before the finish: once finishing is
	// set no publish is queued behind the outcome.
	mu        sync.Mutex
	finishing bool
}

// outcome is how a turn ended. A nil *outcome from the helpers below means
// "not over yet"; abandonedOutcome ends the work without recording one.
type outcome struct {
	status  string
	code    *int
	stderr  string
	abandon bool
}

func failed(stderr string) *outcome {
	return &outcome{status: persistence.StatusFailed, stderr: stderr}
}

func exited(code int) *outcome {
	status := persistence.StatusCompleted
	if code != 0 {
		status = persistence.StatusFailed
	}
	return &outcome{status: status, code: &code}
}

// abandonedOutcome: the node is stopping or the writer gave up; nothing is
// recorded.
var abandonedOutcome = &outcome{abandon: true}

// newTurnRun prepares a turn's run (on the actor's goroutine, so the actor
// can route publishes through it).
func (a *sessionActor) newTurnRun(s *persistence.Session, t *persistence.Turn) *turnRun {
	return &turnRun{a: a, s: s, t: t, n: t.TurnNumber}
}

// run executes (or, after a restart, re-attaches to) the turn and records
// its outcome.
func (r *turnRun) run(ctx context.Context, recovering bool) {
	r.a.m.metrics.started.WithLabelValues(r.s.Runtime).Inc()
	out := r.execute(ctx, recovering && r.t.Status == persistence.StatusRunning)
	if out.abandon {
		r.a.m.log.Debug("turn abandoned without an outcome", slog.String("session", r.s.ID), slog.Int("turn", r.n))
		return
	}
	r.finish(out)
}

func (r *turnRun) execute(ctx context.Context, reattach bool) *outcome {
	a, b := r.a, r.a.m.deps.Backend
	if b == nil {
		return failed("turn failed: no sandbox backend is configured\n")
	}
	var err error
	if r.sessionBytes, r.turnBytes, err = a.m.deps.DB.OutputBytes(ctx, r.s.ID, r.n); err != nil {
		return r.interrupted(ctx, fmt.Errorf("read the session's output size: %w", err))
	}
	if reattach {
		if r.exec, err = r.reattach(ctx); err != nil {
			return r.interrupted(ctx, err)
		}
	} else {
		if st, _, serr := a.m.deps.DB.SessionStatus(ctx, r.s.ID); serr == nil && st == persistence.StatusTerminated {
			return failed("turn aborted: session terminated before execution started\n")
		}
		if _, err := b.Get(ctx, r.s.BackendHandle); err != nil {
			if out := r.ended(ctx, err); out != nil {
				return out
			}
			return failed(fmt.Sprintf("turn failed: Sprite not found: %v\n", err))
		}
		if r.exec, err = r.start(ctx); err != nil {
			if errors.Is(err, errTurnTerminated) {
				return failed("turn aborted: session terminated before execution started\n")
			}
			return r.interrupted(ctx, err)
		}
	}
	defer func() {
		if r.exec != nil {
			r.exec.Close()
		}
	}()
	return r.stream(ctx)
}

// abandoned reports that the work must end without an outcome: the node
// is stopping, or the session's log writer has stopped (err), so nothing
// more can be recorded by this incarnation.
func (r *turnRun) abandoned(err error) bool {
	return r.a.ctx.Err() != nil || errors.Is(err, errWriterStopped)
}

// ended maps the end of the work context: abandoned, or terminated (the
// exec is killed; terminate has already recorded the session's status).
// It returns nil while the work goes on.
func (r *turnRun) ended(ctx context.Context, err error) *outcome {
	switch {
	case r.abandoned(err):
		return abandonedOutcome
	case ctx.Err() != nil:
		r.kill()
		return failed("")
	}
	return nil
}

// interrupted is the outcome of a step that failed with err.
func (r *turnRun) interrupted(ctx context.Context, err error) *outcome {
	if out := r.ended(ctx, err); out != nil {
		return out
	}
	var lim *limitError
	if errors.As(err, &lim) {
		r.kill()
		return failed("turn failed: " + lim.Error() + "; the agent was stopped\n")
	}
	return failed("turn failed: " + err.Error() + "\n")
}

// kill stops the turn's exec, if it started (idempotent: killing an exited
// exec is not an error).
func (r *turnRun) kill() {
	if r.execID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.a.m.deps.Config.KillGrace)
	defer cancel()
	if err := r.a.m.deps.Backend.Kill(ctx, r.s.BackendHandle, r.execID, "KILL"); err != nil && !errors.Is(err, sprites.ErrNotFound) {
		r.a.m.log.Warn("kill the turn's exec", slog.String("session", r.s.ID), slog.String("exec", r.execID), slog.String("error", err.Error()))
	}
}

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
	var matched bool
	err = a.writer.submitWait(ctx, &logOp{
		events: []*persistence.Event{{SessionID: r.s.ID, Kind: persistence.KindStage, Stage: runtimes.StageRuntimeStart, State: "started"}},
		updates: []persistence.Update{
			persistence.SetTurnIf(r.t.ID, []string{persistence.StatusPending},
				map[string]any{"status": persistence.StatusRunning, "started_at": started}, &matched),
			persistence.SetSessionIf(r.s.ID, []string{persistence.StatusPending, persistence.StatusRunning},
				map[string]any{"status": persistence.StatusRunning, "exit_code": nil}, nil),
		},
	})
	if err != nil {
		return nil, err
	}
	if !matched {
		// Terminate failed the turn between our status read and this
		// update: never run it.
		return nil, errTurnTerminated
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
		// Without a durable exec id no later start could re-attach: the
		// agent must not run on unsupervised.
		r.kill()
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

// Phases of stream's read loop.
const (
	readRunning = iota // before the deadline
	readGrace          // past the deadline, not killed yet (exitGrace)
	readKilled         // killed: waiting KillGrace for the exit
)

// stream copies the exec's output into the log until it exits, times out,
// hits an output cap, loses its transport for good, or the session is
// terminated.
func (r *turnRun) stream(ctx context.Context) *outcome {
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	until := func(d time.Time) context.Context {
		c, cancel := context.WithDeadline(ctx, d)
		cancels = append(cancels, cancel)
		return c
	}
	phase, readCtx := readRunning, until(r.deadline())
	timedOut := func() *outcome {
		if err := r.flush(ctx); err != nil {
			return r.interrupted(ctx, err)
		}
		return failed(fmt.Sprintf("turn failed: timed out after %ds\n", r.t.TimeoutSeconds))
	}
	for {
		ev, err := r.exec.Next(readCtx)
		// A lost transport may wrap io.EOF (the connection's end): it is
		// not the exec's end of output.
		eof := errors.Is(err, io.EOF) && !errors.Is(err, sprites.ErrTransportLost)
		if err != nil && !eof {
			if out := r.ended(ctx, nil); out != nil {
				return out
			}
		}
		switch {
		case err == nil:
		case eof:
			if phase == readKilled {
				return timedOut()
			}
			if err := r.flush(ctx); err != nil {
				return r.interrupted(ctx, err)
			}
			return failed("turn failed: the agent's output ended without an exit status\n")
		case readCtx.Err() != nil:
			switch phase {
			case readRunning:
				// Read what an exec that already exited still reports
				// before killing it: its exit code is the truth.
				phase, readCtx = readGrace, until(time.Now().Add(exitGrace))
			case readGrace:
				r.kill()
				phase, readCtx = readKilled, until(time.Now().Add(r.a.m.deps.Config.KillGrace))
			default:
				return timedOut()
			}
			continue
		case phase == readKilled:
			return timedOut()
		default:
			if out := r.reconnect(ctx, err); out != nil {
				return out
			}
			continue
		}
		r.lost = 0
		if ev.Exited {
			if err := r.flush(ctx); err != nil {
				return r.interrupted(ctx, err)
			}
			if phase == readKilled {
				return timedOut()
			}
			return exited(ev.ExitCode)
		}
		if err := r.output(ctx, ev.Stream, r.dec[ev.Stream].decode(ev.Data)); err != nil {
			return r.interrupted(ctx, err)
		}
	}
}

// reconnect re-attaches to the exec after its output stream was lost,
// from the bytes already handed to the writer (those are committed, or the
// writer stops the turn), with backoff. After ReattachTries consecutive
// failures the exec is killed and the turn fails. It returns nil once a
// new stream is attached.
func (r *turnRun) reconnect(ctx context.Context, cause error) *outcome {
	cfg := r.a.m.deps.Config
	r.exec.Close()
	r.exec = nil
	// Bytes the decoders hold back were not handed to the writer: read
	// them again.
	r.base.Stdout += r.dec[sprites.Stdout].consumed
	r.base.Stderr += r.dec[sprites.Stderr].consumed
	r.dec = [3]textDecoder{}
	lastErr := cause
	for r.lost < cfg.ReattachTries {
		r.lost++
		delay := min(cfg.ReattachDelay<<min(r.lost-1, 6), 5*time.Second)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return r.ended(ctx, ctx.Err())
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		exec, err := r.a.m.deps.Backend.Attach(actx, r.s.BackendHandle, r.execID, r.base)
		cancel()
		if err == nil {
			r.a.m.log.Info("re-attached to the turn's exec after its stream was lost", slog.String("session", r.s.ID),
				slog.String("exec", r.execID), slog.Int("attempt", r.lost), slog.String("cause", cause.Error()))
			r.exec = exec
			return nil
		}
		if out := r.ended(ctx, err); out != nil {
			return out
		}
		lastErr = err
		r.a.m.log.Warn("re-attach to the turn's exec failed", slog.String("session", r.s.ID),
			slog.String("exec", r.execID), slog.Int("attempt", r.lost), slog.String("error", err.Error()))
		if errors.Is(err, sprites.ErrNotFound) {
			break
		}
	}
	r.kill()
	return failed(fmt.Sprintf("turn failed: lost the agent's output stream and could not re-attach (%v); the agent was stopped\n", lastErr))
}

// limitError reports an output cap reached.
type limitError struct {
	what  string // "output" or "session output"
	limit int64
}

func (e *limitError) Error() string {
	return fmt.Sprintf("%s limit of %s reached", e.what, formatBytes(e.limit))
}

// formatBytes renders a byte count the way the configuration reads.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// capText cuts text to what the output caps still allow (at a character
// boundary) and reports the cap it reached, if any.
func (r *turnRun) capText(text string) (string, error) {
	cfg := r.a.m.deps.Config
	room, lim := cfg.MaxTurnOutput-r.turnBytes, &limitError{what: "output", limit: cfg.MaxTurnOutput}
	if s := cfg.MaxSessionOutput - r.sessionBytes; s < room {
		room, lim = s, &limitError{what: "session output", limit: cfg.MaxSessionOutput}
	}
	if int64(len(text)) <= room {
		return text, nil
	}
	cut := int(max(room, 0))
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut], lim
}

// output appends one chunk (blocking while the writer is behind). It fails
// with a *limitError once an output cap is reached (what fits is stored).
func (r *turnRun) output(ctx context.Context, stream sprites.Stream, text string) error {
	text, limited := r.capText(text)
	if text == "" {
		return limited
	}
	n := r.n
	err := r.a.writer.submit(ctx, &logOp{
		events: []*persistence.Event{{SessionID: r.s.ID, Turn: &n, Kind: persistence.KindOutput, Stream: stream.String(), Data: text}},
		offsets: &turnOffsets{turnID: r.t.ID,
			stdout: r.base.Stdout + r.dec[sprites.Stdout].consumed,
			stderr: r.base.Stderr + r.dec[sprites.Stderr].consumed},
	})
	if err != nil {
		return err
	}
	r.turnBytes += int64(len(text))
	r.sessionBytes += int64(len(text))
	return limited
}

// flush emits bytes held back by the decoders.
func (r *turnRun) flush(ctx context.Context) error {
	for _, st := range []sprites.Stream{sprites.Stdout, sprites.Stderr} {
		if err := r.output(ctx, st, r.dec[st].flush()); err != nil {
			return err
		}
	}
	return nil
}

// publish appends a dev-hook output event (D19) in the turn's order: it is
// refused once the turn's outcome has been queued, so nothing commits after
// the finish.
func (r *turnRun) publish(ctx context.Context, ev *persistence.Event) error {
	op := &logOp{events: []*persistence.Event{ev}, done: make(chan error, 1)}
	r.mu.Lock()
	if r.finishing {
		r.mu.Unlock()
		return ErrNotRunning
	}
	w := r.a.writer
	err := w.submit(ctx, op)
	r.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, errWriterStopped) {
			return ErrNotRunning // the turn's work ended meanwhile
		}
		return err
	}
	// A queued op is committed (or answered) by the writer, also while it
	// drains at the actor's stop: wait for that answer, not for the work
	// context, so a publish racing the end of the turn reports what
	// happened to its event.
	var done error
	select {
	case done = <-op.done:
	case <-w.stopped:
		select {
		case done = <-op.done:
		default:
			return ErrNotRunning
		}
	}
	if errors.Is(done, errWriterStopped) {
		return ErrNotRunning
	}
	return done
}

// finish records the turn's outcome and the session's status (guarded: a
// turn terminate already failed and a terminated session stay as they
// are), then tells the actor the work is over.
func (r *turnRun) finish(out *outcome) {
	r.mu.Lock()
	r.finishing = true
	r.mu.Unlock()
	n := r.n
	var events []*persistence.Event
	if out.stderr != "" {
		events = append(events, &persistence.Event{SessionID: r.s.ID, Turn: &n, Kind: persistence.KindOutput, Stream: "stderr", Data: out.stderr})
	}
	var exit any
	if out.code != nil {
		exit = *out.code
	}
	active := []string{persistence.StatusPending, persistence.StatusRunning}
	ended := time.Now().UTC().Truncate(time.Microsecond)
	op := &logOp{
		events: events,
		updates: []persistence.Update{
			persistence.SetTurnIf(r.t.ID, active, map[string]any{"status": out.status, "exit_code": exit, "ended_at": ended}, nil),
			persistence.SetSessionIf(r.s.ID, active, map[string]any{"status": out.status, "exit_code": exit}, nil),
		},
		note: &workFinished{},
	}
	m := r.a.m.metrics
	m.finished.WithLabelValues(r.s.Runtime, out.status).Inc()
	if r.t.StartedAt != nil {
		m.turnDuration.WithLabelValues(r.s.Runtime).Observe(time.Since(*r.t.StartedAt).Seconds())
	}
	// The work context may be cancelled (terminate); the record is still
	// written while the actor lives.
	if err := r.a.writer.submit(r.a.ctx, op); err != nil {
		r.a.m.log.Warn("record turn outcome", "session", r.s.ID, "error", err.Error())
	}
}
