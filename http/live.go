package http

import (
	"context"

	"github.com/aodhq/aod/actors"
	"github.com/aodhq/aod/persistence"
)

// Sessions is what the HTTP layer asks of the node's session actors. The
// local implementation is ActorSessions over an *actors.Manager; the
// cluster can slot in one that forwards to the owning node.
type Sessions interface {
	// Kick makes the session's actor look for work (new session or turn).
	Kick(sessionID string)
	// Terminate stops the session's running work.
	Terminate(sessionID string)
	// Destroy deletes a sandbox in the background.
	Destroy(handle string)
	// Subscribe attaches a live subscriber; live is false when the session
	// has no running work (serve it from the log alone). It waits for the
	// actor only as long as ctx lives.
	Subscribe(ctx context.Context, sessionID string) (sub Subscription, live bool, err error)
	// Attach subscribes to userID's session only if its actor is live and
	// running its work, without reading the database; ok false means "look
	// the session up". See LiveSession.
	Attach(ctx context.Context, sessionID string, userID, after int64) (sub Subscription, info LiveSession, ok bool)
	// Unsubscribe detaches a subscriber (idempotent).
	Unsubscribe(sub Subscription)
	// Publish appends one stdout output event to the running turn (D19).
	Publish(ctx context.Context, sessionID, data string) (int64, error)
}

// Subscription is a live subscriber's feed of durable events.
type Subscription interface {
	// C is signalled when Take has something new or the feed ended.
	C() <-chan struct{}
	// Take hands over the queued batches (reusing buf) and reports whether
	// the feed is still open.
	Take(buf [][]*persistence.Event) ([][]*persistence.Event, bool)
	// Lagged reports, once the feed ended, that the subscriber fell behind
	// its budget: catch up from the log and subscribe again.
	Lagged() bool
}

// LiveSession is what Attach learns from a live session's actor.
type LiveSession struct {
	// Provider names the session's provider (its runtime when unset).
	Provider string
	// Covered: the subscription already holds every event after the
	// cursor; the stream need not read the log first.
	Covered bool
}

// ActorSessions serves Sessions from this node's session actors; nil gives
// nil (no sessions: creating one answers 503).
func ActorSessions(m *actors.Manager) Sessions {
	if m == nil {
		return nil
	}
	return actorSessions{m}
}

type actorSessions struct{ *actors.Manager }

var (
	_ Sessions     = actorSessions{}
	_ Subscription = (*actors.Subscription)(nil)
)

func (a actorSessions) Subscribe(ctx context.Context, sessionID string) (Subscription, bool, error) {
	sub, live, _, err := a.Manager.Subscribe(ctx, sessionID)
	if err != nil || !live {
		return nil, false, err
	}
	return sub, true, nil
}

func (a actorSessions) Attach(ctx context.Context, sessionID string, userID, after int64) (Subscription, LiveSession, bool) {
	sub, info, ok := a.Manager.Attach(ctx, sessionID, userID, after)
	if !ok {
		return nil, LiveSession{}, false
	}
	provider := info.Provider
	if provider == "" {
		provider = info.Runtime
	}
	return sub, LiveSession{Provider: provider, Covered: info.Covered}, true
}

func (a actorSessions) Unsubscribe(sub Subscription) {
	if s, ok := sub.(*actors.Subscription); ok {
		a.Manager.Unsubscribe(s)
	}
}
