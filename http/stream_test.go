package http_test

import (
	"bufio"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	aodhttp "github.com/aodhq/aod/http"
	"github.com/aodhq/aod/http/sse"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/persistence/persistencetest"
)

// stuckSessions is a session layer whose actors never answer a subscribe
// (e.g. an actor still loading from a database that stalls).
type stuckSessions struct {
	aodhttp.Sessions // nil: any other call panics
	waited           chan error
}

func (s *stuckSessions) Attach(context.Context, string, int64, int64) (aodhttp.Subscription, aodhttp.LiveSession, bool) {
	return nil, aodhttp.LiveSession{}, false
}

func (s *stuckSessions) Subscribe(ctx context.Context, _ string) (aodhttp.Subscription, bool, error) {
	<-ctx.Done()
	s.waited <- ctx.Err()
	return nil, false, ctx.Err()
}

func (s *stuckSessions) Unsubscribe(aodhttp.Subscription) {}

// TestStreamSubscribeHasItsOwnTimeout (issue 9 defect 11): a stream whose
// session actor does not answer the subscribe gets its 200 and start event
// after SSESubscribeTimeout, served from the log, instead of waiting on
// the server's lifetime.
func TestStreamSubscribeHasItsOwnTimeout(t *testing.T) {
	t.Parallel()
	persistencetest.Each(t, func(t *testing.T, db *persistence.DB) {
		stuck := &stuckSessions{waited: make(chan error, 8)}
		e := newEnv(t, db, envOpts{sessions: stuck, config: &aodhttp.Config{SSESubscribeTimeout: 300 * time.Millisecond}})
		key, u := e.user()
		ctx := context.Background()
		_, err := db.SessionCreate(ctx, &persistence.SessionCreateParams{
			Session: &persistence.Session{UserID: u.ID, Provider: "anthropic", Runtime: "claude", Backend: "local"},
			Prompt:  "hi", Timeout: 60, DefaultLimit: 10,
		})
		require.NoError(t, err)
		list, err := db.SessionList(ctx, u.ID)
		require.NoError(t, err)
		id := list[0].ID

		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, "GET", e.base+"/sessions/"+id+"/stream", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+key)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err, "the 200 must not wait for an actor that never answers")
		defer resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		require.Less(t, time.Since(start), 10*time.Second)
		require.ErrorIs(t, <-stuck.waited, context.DeadlineExceeded, "the subscribe waited on its own deadline")
		f, err := sse.ReadEvent(bufio.NewReader(resp.Body))
		require.NoError(t, err)
		d, err := sse.DecodeData(f)
		require.NoError(t, err)
		require.Equal(t, "start", d["type"])
	})
}
