package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/migrations"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
	"github.com/aodhq/aod/sprites"
)

// actorBundle is a Manager over a real database (through faultyStore) and
// the scripted fakeBackend.
type actorBundle struct {
	m       *Manager
	db      *persistence.DB
	store   *faultyStore
	backend *fakeBackend
	userID  int64
	agentID string
}

func setupManager(t *testing.T, d migrations.Dialect, cfg Config) *actorBundle {
	t.Helper()
	ctx := context.Background()
	// A database of its own: the reconciler sweeps every session in it.
	db := persistencetest.OpenFresh(t, d)
	u, err := db.UserCreate(ctx, "u-"+persistence.NewUUID())
	require.NoError(t, err)
	agent := &persistence.Agent{UserID: u.ID, Name: "a", Provider: "anthropic", Model: "claude-sonnet-4", Runtime: "claude",
		Skills: json.RawMessage("[]"), MCPServers: json.RawMessage("[]"), Metadata: json.RawMessage("{}")}
	require.NoError(t, db.AgentCreate(ctx, agent))
	b := &actorBundle{db: db, store: &faultyStore{Store: db}, backend: newFakeBackend(), userID: u.ID, agentID: agent.ID}
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() && os.Getenv("AOD_TEST_DEBUG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b.m, err = NewManager(Deps{DB: b.store, Backend: b.backend, Logger: logger, Config: cfg})
	require.NoError(t, err)
	b.m.TestSignals.Init(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, b.m.Stop(ctx))
	})
	return b
}

// session inserts a session whose sandbox is already provisioned, with turn
// 1 pending.
func (b *actorBundle) session(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	s := &persistence.Session{UserID: b.userID, AgentID: &b.agentID, Runtime: "claude", Backend: "sprites", BackendHandle: "sb-" + persistence.NewUUID()[:8]}
	_, err := b.db.SessionCreate(ctx, &persistence.SessionCreateParams{Session: s, Prompt: "do it", Timeout: 600, DefaultLimit: 1000})
	require.NoError(t, err)
	_, err = b.db.Bun().NewUpdate().Table("agent_sessions").Set("provisioned_at = ?", time.Now().UTC()).Where("id = ?", s.ID).Exec(ctx)
	require.NoError(t, err)
	return s.ID
}

// proc waits for the next agent process the fake backend starts.
func (b *actorBundle) proc(t *testing.T) *fakeProc {
	t.Helper()
	select {
	case p := <-b.backend.started:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no agent process started")
		return nil
	}
}

// retired waits until the actor of session id has gone.
func (b *actorBundle) retired(t *testing.T, id string) {
	t.Helper()
	for {
		if got := b.m.TestSignals.ActorRetired.WaitOrTimeout(); got == id {
			return
		}
	}
}

// subscribe attaches a live subscriber (the session must be running).
func (b *actorBundle) subscribe(t *testing.T, id string) *Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, live, _, err := b.m.Subscribe(ctx, id)
	require.NoError(t, err)
	require.True(t, live)
	return sub
}

// waitOutput reads sub until an output event with data want arrives.
func waitOutput(t *testing.T, sub *Subscription, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var buf [][]*persistence.Event
	for {
		select {
		case <-sub.C():
			var open bool
			buf, open = sub.Take(buf)
			for _, batch := range buf {
				for _, e := range batch {
					if e.Data == want {
						return
					}
				}
			}
			require.True(t, open, "subscription closed before %q", want)
		case <-timeout:
			t.Fatalf("no output %q", want)
		}
	}
}

// outputs returns the session's logged output data, in id order.
func (b *actorBundle) outputs(t *testing.T, id string) []string {
	t.Helper()
	evs, err := b.db.EventsAfter(context.Background(), id, 0, 10_000)
	require.NoError(t, err)
	var out []string
	for _, e := range evs {
		if e.Kind == persistence.KindOutput {
			out = append(out, e.Data)
		}
	}
	return out
}

func (b *actorBundle) status(t *testing.T, id string) (session, turn string) {
	t.Helper()
	ctx := context.Background()
	s, _, err := b.db.SessionStatus(ctx, id)
	require.NoError(t, err)
	tr, err := b.db.TurnLatest(ctx, id)
	require.NoError(t, err)
	return s, tr.Status
}

func lines(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("line %d\n", i))
	}
	return out
}

// TestAbandonedBatchResumesExactlyOnce is defect 2 at the actor level: the
// database refuses the batch holding "line 6" for longer than the writer's
// budget, then recovers while the agent keeps printing. The old writer
// dropped that batch and carried on, so the next batch's offsets covered
// line 6 and it was lost for good. Now the work stops without an outcome,
// the actor retires, and the reconciler's kick re-attaches from the last
// committed offsets: every line is logged exactly once, in order.
func TestAbandonedBatchResumesExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, d := range []migrations.Dialect{migrations.Postgres, migrations.SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			b := setupManager(t, d, Config{CommitBudget: 300 * time.Millisecond})
			id := b.session(t)
			b.m.Kick(id)
			p := b.proc(t)
			sub := b.subscribe(t, id)
			for _, l := range lines(1, 5) {
				p.write(sprites.Stdout, l)
			}
			waitOutput(t, sub, "line 5\n")

			b.store.setLogAppend(func(context.Context, []*persistence.Event) error { return errInjected })
			p.write(sprites.Stdout, "line 6\n")
			require.ErrorIs(t, b.m.TestSignals.BatchAbandoned.WaitOrTimeout(), errInjected)
			b.store.setLogAppend(nil) // the database is back
			for _, l := range lines(7, 10) {
				p.write(sprites.Stdout, l)
			}
			p.exit(0)
			b.retired(t, id)
			st, tst := b.status(t, id)
			require.Equal(t, persistence.StatusRunning, st, "no outcome was recorded")
			require.Equal(t, persistence.StatusRunning, tst)

			r := NewReconciler(b.m, time.Hour)
			r.TestSignals.Init(t)
			n, err := r.Sweep(context.Background())
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.Equal(t, id, r.TestSignals.Kicked.WaitOrTimeout())
			b.retired(t, id)

			require.Equal(t, lines(1, 10), b.outputs(t, id), "every line exactly once, in order")
			st, tst = b.status(t, id)
			require.Equal(t, persistence.StatusCompleted, st)
			require.Equal(t, persistence.StatusCompleted, tst)
			require.EqualValues(t, 1, p.attaches.Load(), "resumed by re-attaching to the same process")
			require.Equal(t, 0, b.m.Live())
		})
	}
}

// TestAbandonedFinishIsReconciled: the batch holding the turn's outcome is
// the one abandoned. The old writer still reported its note, so the actor
// retired and the session stayed running with no actor, for good. Now the
// reconciler finds it and the re-attached turn records the real exit.
func TestAbandonedFinishIsReconciled(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{CommitBudget: 200 * time.Millisecond})
	id := b.session(t)
	b.m.Kick(id)
	p := b.proc(t)
	sub := b.subscribe(t, id)
	p.write(sprites.Stdout, "only line\n")
	waitOutput(t, sub, "only line\n")
	b.store.setLogAppend(func(context.Context, []*persistence.Event) error { return errInjected })
	p.exit(3)
	require.Error(t, b.m.TestSignals.BatchAbandoned.WaitOrTimeout())
	b.retired(t, id)
	st, _ := b.status(t, id)
	require.Equal(t, persistence.StatusRunning, st)

	b.store.setLogAppend(nil)
	r := NewReconciler(b.m, 20*time.Millisecond)
	r.TestSignals.Init(t)
	require.NoError(t, r.Start(context.Background()))
	defer r.Stop()
	require.Equal(t, id, r.TestSignals.Kicked.WaitOrTimeout())
	b.retired(t, id)
	r.Stop()
	st, tst := b.status(t, id)
	require.Equal(t, persistence.StatusFailed, st)
	require.Equal(t, persistence.StatusFailed, tst)
	tr, err := b.db.TurnLatest(context.Background(), id)
	require.NoError(t, err)
	require.NotNil(t, tr.ExitCode)
	require.Equal(t, 3, *tr.ExitCode, "the real exit code, read on re-attach")
	require.Equal(t, []string{"only line\n"}, b.outputs(t, id))
}

// TestPanicInReceive is defect 5: a panic in Receive used to append the
// failure directly beside the still-running writer and turn, which went on
// logging output after it and could then overwrite "failed" with the
// turn's real outcome. Now the work and the writer stop first; the failure
// is the last thing logged and the session stays failed.
func TestPanicInReceive(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{})
	// The old code lost the race below about every other time; a few rounds
	// make its failure certain.
	for range 6 {
		panicRound(t, b)
	}
}

func panicRound(t *testing.T, b *actorBundle) {
	id := b.session(t)
	b.m.Kick(id)
	p := b.proc(t)
	sub := b.subscribe(t, id)
	p.write(sprites.Stdout, "before\n")
	waitOutput(t, sub, "before\n")

	// The agent keeps printing while the actor panics.
	stop, ticked := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ticked)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p.write(sprites.Stdout, fmt.Sprintf("tick %d\n", i))
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	waitOutput(t, sub, "tick 100\n")
	// Hold the writer inside a commit of output when the actor panics: the
	// old code appended the failure beside it, and the held batch landed
	// after the failure.
	stalled, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b.store.setLogAppend(func(ctx context.Context, events []*persistence.Event) error {
		if len(events) == 0 || !strings.HasPrefix(events[0].Data, "tick") {
			return nil
		}
		once.Do(func() { close(stalled) })
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	select {
	case <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("no output batch reached the store")
	}

	b.m.mu.Lock()
	e := b.m.actors[id]
	b.m.mu.Unlock()
	require.NotNil(t, e)
	// A nil subscriber makes Receive dereference nil: a real panic inside
	// the actor.
	b.m.engine.Send(e.pid, &subscribeCmd{sub: nil})
	require.Equal(t, id, b.m.TestSignals.PanicRecorded.WaitOrTimeout())
	close(release)
	b.retired(t, id)
	close(stop)
	<-ticked
	p.exit(0)
	// A successor finds the session failed and does nothing.
	b.m.Kick(id)
	b.retired(t, id)

	out := b.outputs(t, id)
	require.Equal(t, "before\n", out[0])
	require.Equal(t, internalFailure, out[len(out)-1], "the failure is the last thing logged: nothing beside or after it")
	require.Equal(t, 1, strings.Count(strings.Join(out, ""), internalFailure))
	st, tst := b.status(t, id)
	require.Equal(t, persistence.StatusFailed, st)
	require.Equal(t, persistence.StatusFailed, tst)
	require.Equal(t, 0, b.m.Live())
}

// TestRetireByIncarnation: retiring an old incarnation never stops its
// successor (the old retire looked the actor up by session id).
func TestRetireByIncarnation(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{})
	id := b.session(t)
	b.m.Kick(id)
	b.proc(t)
	b.m.mu.Lock()
	first := b.m.actors[id]
	b.m.mu.Unlock()
	stale := &actorEntry{gen: first.gen - 1, stopped: make(chan struct{}), writerDone: make(chan struct{})}
	b.m.retire(id, stale)
	b.m.mu.Lock()
	now := b.m.actors[id]
	stopping := now.stopping
	b.m.mu.Unlock()
	require.Same(t, first, now)
	require.False(t, stopping, "a predecessor's retire must not stop the running actor")
}

// TestTerminateInEachPhase: a terminate ends the work in every phase with
// the session terminated and the actor gone.
func TestTerminateInEachPhase(t *testing.T) {
	t.Parallel()
	terminate := func(t *testing.T, b *actorBundle, id string) {
		_, err := b.db.Bun().NewUpdate().Table("agent_sessions").Set("status = ?", persistence.StatusTerminated).Where("id = ?", id).Exec(context.Background())
		require.NoError(t, err)
		b.m.Terminate(id)
	}
	t.Run("Turn", func(t *testing.T) {
		t.Parallel()
		b := setupManager(t, migrations.SQLite, Config{})
		id := b.session(t)
		b.m.Kick(id)
		p := b.proc(t)
		sub := b.subscribe(t, id)
		p.write(sprites.Stdout, "working\n")
		waitOutput(t, sub, "working\n")
		terminate(t, b, id)
		b.retired(t, id)
		st, tst := b.status(t, id)
		require.Equal(t, persistence.StatusTerminated, st)
		require.Equal(t, persistence.StatusFailed, tst)
		require.Equal(t, 0, b.m.Live())
	})
	t.Run("BeforeTheTurnStarts", func(t *testing.T) {
		t.Parallel()
		b := setupManager(t, migrations.SQLite, Config{})
		id := b.session(t)
		terminate(t, b, id) // no actor yet: nothing to stop
		b.m.Kick(id)
		b.retired(t, id)
		st, _ := b.status(t, id)
		require.Equal(t, persistence.StatusTerminated, st)
		require.Empty(t, b.backend.started, "no agent starts for a terminated session")
	})
	t.Run("Idle", func(t *testing.T) {
		t.Parallel()
		b := setupManager(t, migrations.SQLite, Config{})
		id := b.session(t)
		b.m.Kick(id)
		p := b.proc(t)
		p.exit(0)
		b.retired(t, id)
		terminate(t, b, id)
		require.Equal(t, 0, b.m.Live())
		b.m.TestSignals.ActorRetired.RequireEmpty()
	})
}

// TestReconcilerKicksSessionWithoutActor: a pending session nobody kicked
// (as after a failed load during an outage) is found and run by the reconciler.
func TestReconcilerKicksSessionWithoutActor(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{})
	id := b.session(t)
	r := NewReconciler(b.m, 20*time.Millisecond)
	r.TestSignals.Init(t)
	require.NoError(t, r.Start(context.Background()))
	require.NoError(t, r.Start(context.Background()), "Start is idempotent")
	t.Cleanup(r.Stop)
	require.Equal(t, id, r.TestSignals.Kicked.WaitOrTimeout())
	p := b.proc(t)
	p.exit(0)
	b.retired(t, id)
	r.Stop()
	r.Stop()
	st, _ := b.status(t, id)
	require.Equal(t, persistence.StatusCompleted, st)
	require.True(t, strings.HasPrefix(p.stdin, "do it"), p.stdin)
}

// TestUnsubscribeReachesTheActor: a subscriber that goes away is removed by
// the actor (SubscriberGone), and later batches are not offered to it.
func TestUnsubscribeReachesTheActor(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{})
	id := b.session(t)
	b.m.Kick(id)
	p := b.proc(t)
	sub := b.subscribe(t, id)
	p.write(sprites.Stdout, "one\n")
	waitOutput(t, sub, "one\n")
	b.m.Unsubscribe(sub)
	require.Equal(t, id, b.m.TestSignals.SubscriberGone.WaitOrTimeout())
	// Ended by the actor: Take drains what was queued, then reports the end.
	for open := true; open; {
		<-sub.C()
		_, open = sub.Take(nil)
	}
	require.False(t, sub.Lagged(), "an unsubscribed subscriber is not lagged")
	b.m.Unsubscribe(sub) // idempotent
	p.exit(0)
	b.retired(t, id)
	b.m.TestSignals.SubscriberGone.RequireEmpty()
}

// TestKickWhileRetiring: a kick that reaches an actor after it decided to
// retire is not lost: the successor incarnation is started as soon as the
// old one is gone and picks up the work.
func TestKickWhileRetiring(t *testing.T) {
	t.Parallel()
	b := setupManager(t, migrations.SQLite, Config{})
	id := b.session(t)
	// Hold the first incarnation's load, so the messages below are the
	// only ones it acts on.
	held := make(chan struct{}, 1)
	b.store.setSessionGet(func(ctx context.Context) error {
		held <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	b.m.Kick(id)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the actor never loaded")
	}
	b.store.setSessionGet(nil)
	// A failed load makes it retire; the kick queued right behind it
	// reaches an actor that is retiring. Both are queued under the
	// manager's lock, which the retiring actor needs before it can poison
	// itself, so the kick is ahead of the poison pill.
	b.m.mu.Lock()
	e := b.m.actors[id]
	b.m.engine.Send(e.pid, &stateLoaded{gen: e.gen, err: errInjected})
	b.m.engine.Send(e.pid, &kick{})
	b.m.mu.Unlock()
	b.retired(t, id)
	p := b.proc(t) // the successor runs the pending turn
	p.exit(0)
	b.retired(t, id)
	st, _ := b.status(t, id)
	require.Equal(t, persistence.StatusCompleted, st)
}
