package actors

import (
	"context"

	"github.com/aodhq/aod/persistence"
)

// Store is what the session actors need from the database: exactly the
// methods they call, Noun+Verb. *persistence.DB implements it; tests wrap it
// (actors/actorstest.FaultStore) to inject failures, stalls and outages.
//
// LogAppend is called only by a session's single log writer (D7), with the
// events of one batch and the state updates that follow them, in one
// transaction: either all of it is durable or none of it.
type Store interface {
	AgentGet(ctx context.Context, userID int64, id string) (*persistence.Agent, error)
	EnvironmentGet(ctx context.Context, userID int64, id string) (*persistence.Environment, error)
	EventsLast(ctx context.Context, sessionID string) ([]persistence.Event, error)
	LogAppend(ctx context.Context, events []*persistence.Event, updates ...persistence.Update) error
	OutputBytes(ctx context.Context, sessionID string, turn int) (session, turnBytes int64, err error)
	SandboxDestroyAdd(ctx context.Context, backend, handle string) error
	SessionGet(ctx context.Context, userID int64, id string) (*persistence.Session, error)
	SessionResources(ctx context.Context, sessionID string) ([]persistence.Resource, error)
	SessionSecretEnvVars(ctx context.Context, sessionID string) (map[string]string, error)
	SessionStatus(ctx context.Context, sessionID string) (string, *int, error)
	SessionsActive(ctx context.Context) ([]persistence.Session, error)
	TurnLatest(ctx context.Context, sessionID string) (*persistence.Turn, error)
}

var _ Store = (*persistence.DB)(nil)
