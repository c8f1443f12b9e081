package actors

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/persistence"
)

func batchOf(n, size int) []*persistence.Event {
	out := make([]*persistence.Event, n)
	for i := range out {
		out[i] = &persistence.Event{ID: int64(i + 1), Data: strings.Repeat("x", size)}
	}
	return out
}

// A subscriber that does not take its batches is refused once its queue
// would pass the byte budget (the actor then drops it as lagged), and
// ending it as lagged releases what it held.
func TestSubscriptionByteBudget(t *testing.T) {
	sub := newSubscription(1000, 1<<20)
	b := batchOf(1, 64<<10)
	size := batchBytes(b)
	require.EqualValues(t, 64<<10+eventOverhead, size)
	pushed := 0
	for sub.push(b, size) {
		pushed++
		require.Less(t, pushed, 100, "the budget must refuse eventually")
	}
	require.Equal(t, int((1<<20)/size), pushed, "as many 64 KiB batches as fit in 1 MiB")
	sub.end(true)
	require.True(t, sub.Lagged())
	got, open := sub.Take(nil)
	require.False(t, open)
	require.Empty(t, got, "a lagged subscriber's queue is released")

	// The batch count bounds it too, and an oversized first batch is
	// admitted alone (the log writer's batches are bounded in events).
	sub = newSubscription(2, 1<<20)
	require.True(t, sub.push(batchOf(1, 1), 1))
	require.True(t, sub.push(batchOf(1, 1), 1))
	require.False(t, sub.push(batchOf(1, 1), 1))
	sub = newSubscription(10, 100)
	require.True(t, sub.push(batchOf(1, 1000), 1000))
	require.False(t, sub.push(batchOf(1, 1), 1))
}

// Take hands over batches in order, resets the budget, and a finished
// subscription still delivers what it queued before ending.
func TestSubscriptionTake(t *testing.T) {
	sub := newSubscription(10, 1<<20)
	one, two := batchOf(1, 10), batchOf(2, 10)
	require.True(t, sub.push(one, 100))
	require.True(t, sub.push(two, 100))
	select {
	case <-sub.C():
	default:
		t.Fatal("C is signalled after a push")
	}
	got, open := sub.Take(nil)
	require.True(t, open)
	require.Equal(t, [][]*persistence.Event{one, two}, got)
	require.True(t, sub.push(one, 100))
	sub.end(false)
	got, open = sub.Take(got)
	require.False(t, open)
	require.Equal(t, [][]*persistence.Event{one}, got)
	require.True(t, sub.Finished())
}

// The writer's byte gate blocks a producer beyond the budget until bytes
// are released, and gives up with the context or the writer's stop.
func TestByteGate(t *testing.T) {
	g := newByteGate(100)
	stopped := make(chan struct{})
	ctx := context.Background()
	require.NoError(t, g.acquire(ctx, stopped, 60))
	require.NoError(t, g.acquire(ctx, stopped, 40))
	admitted := make(chan error, 1)
	go func() { admitted <- g.acquire(ctx, stopped, 10) }()
	select {
	case <-admitted:
		t.Fatal("admitted beyond the budget")
	case <-time.After(50 * time.Millisecond):
	}
	g.release(60)
	require.NoError(t, <-admitted)

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, g.acquire(short, stopped, 90), context.DeadlineExceeded)
	go func() { admitted <- g.acquire(ctx, stopped, 90) }()
	close(stopped)
	require.ErrorIs(t, <-admitted, errWriterStopped)

	// Larger than the whole budget: admitted once nothing else is held.
	g = newByteGate(10)
	require.NoError(t, g.acquire(ctx, nil, 1000))
}

// The actor's recent window holds every event above recentFrom within its
// byte bound; Attach serves a cursor inside it from memory (covered) and
// leaves an older cursor, another user or an idle actor to the log.
func TestRecentWindowAttach(t *testing.T) {
	a := &sessionActor{m: &Manager{deps: Deps{Config: Config{RecentBytes: 3 * (10 + eventOverhead)}}},
		subs: map[*Subscription]struct{}{}, phase: phaseTurn,
		session: &persistence.Session{UserID: 7, Provider: "anthropic", Runtime: "claude"}}
	var evs []*persistence.Event
	for i := 1; i <= 5; i++ {
		evs = append(evs, &persistence.Event{ID: int64(i), Data: strings.Repeat("x", 10)})
	}
	a.remember(evs[:2])
	a.remember(evs[2:])
	require.EqualValues(t, 2, a.recentFrom, "events 1 and 2 fell out of the window")
	require.Len(t, a.recent, 3)

	attach := func(user, after int64) (*Subscription, subscribeResult) {
		sub := newSubscription(10, 1<<20)
		a.attach(&attachCmd{sub: sub, userID: user, after: after})
		return sub, <-sub.ready
	}
	sub, r := attach(7, 3)
	require.True(t, r.live)
	require.True(t, r.covered)
	require.Equal(t, "anthropic", r.provider)
	got, _ := sub.Take(nil)
	require.Equal(t, [][]*persistence.Event{{evs[3], evs[4]}}, got, "the events after the cursor, from memory")

	_, r = attach(7, 1)
	require.True(t, r.live)
	require.False(t, r.covered, "a cursor older than the window reads the log")
	_, r = attach(8, 3)
	require.False(t, r.live, "another user's session is not attached")
	a.phase = phaseIdle
	_, r = attach(7, 3)
	require.False(t, r.live, "no running work: served from the log")
}
