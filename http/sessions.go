package http

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/aodhq/aod/http/schema"
	"github.com/aodhq/aod/persistence"
	"github.com/aodhq/aod/runtimes"
)

var (
	errSessionNotFound      = detail(fiber.StatusNotFound, "Session not found")
	errSessionArchivedAgent = detail(fiber.StatusConflict, "Cannot create session with archived agent")
	errSessionArchivedEnv   = detail(fiber.StatusConflict, "Cannot create session with archived environment")
	errBackendNotConfigured = detail(fiber.StatusServiceUnavailable, "Session backend is not configured")
	errBackendTokenMissing  = detail(fiber.StatusServiceUnavailable, "Session backend token is not configured")
	errBackendGone          = detail(fiber.StatusConflict, "Session backend is no longer available; start a new session.")
	errSessionRunning       = detail(fiber.StatusConflict, "Session is already running")
	errSessionTerminated    = detail(fiber.StatusConflict, "Session has been terminated")
	errSessionFailed        = detail(fiber.StatusConflict, "Session has failed and cannot be resumed. Start a new session.")
	errSessionPendingTurn   = detail(fiber.StatusConflict, "Session already has a pending turn")
	errSessionAlreadyTerm   = detail(fiber.StatusConflict, "Session is already terminated")
	errSessionDeleteActive  = detail(fiber.StatusConflict, "Cannot delete an active session")
	errSinceMustBeInteger   = detail(fiber.StatusBadRequest, "since must be an integer")
	errSessionNotRunning    = detail(fiber.StatusConflict, "Session is not running")
)

func (s *Server) sessionRoutes() {
	s.view("/sessions", true, map[string]handlerFunc{
		fiber.MethodGet:  s.sessionList,
		fiber.MethodPost: s.sessionCreate,
	})
	s.view("/sessions/:id", false, map[string]handlerFunc{fiber.MethodGet: s.sessionGet})
	s.view("/sessions/:id/prompt", false, map[string]handlerFunc{fiber.MethodPost: s.sessionPrompt})
	s.view("/sessions/:id/turns", false, map[string]handlerFunc{fiber.MethodGet: s.sessionTurns})
	s.view("/sessions/:id/terminate", false, map[string]handlerFunc{fiber.MethodPost: s.sessionTerminate})
	s.view("/sessions/:id/delete", true, map[string]handlerFunc{fiber.MethodDelete: s.sessionDelete})
	s.view("/sessions/:id/stream", false, map[string]handlerFunc{fiber.MethodGet: s.stream})
	if s.cfg.DevPublish {
		// Non-loopback clients get 404 before authentication (D19).
		s.app.Use("/dev", loopbackOnly)
		s.view("/dev/sessions/:id/output", true, map[string]handlerFunc{fiber.MethodPost: s.devPublish})
	}
}

type resourceJSON struct {
	Type      string `json:"type"`
	URL       string `json:"url"`
	MountPath string `json:"mount_path"`
}

// sessionJSON is the Session resource (GET and list).
type sessionJSON struct {
	ID            string         `json:"id"`
	AgentID       *string        `json:"agent_id"`
	EnvironmentID *string        `json:"environment_id"`
	Provider      string         `json:"provider"`
	Status        string         `json:"status"`
	ExitCode      *int           `json:"exit_code"`
	CreatedAt     string         `json:"created_at"`
	UpdatedAt     string         `json:"updated_at"`
	Resources     []resourceJSON `json:"resources"`
	TurnCount     int            `json:"turn_count"`
	CurrentTurn   *int           `json:"current_turn"`
}

type turnJSON struct {
	TurnNumber int     `json:"turn_number"`
	Prompt     string  `json:"prompt"`
	Status     string  `json:"status"`
	ExitCode   *int    `json:"exit_code"`
	CreatedAt  string  `json:"created_at"`
	StartedAt  *string `json:"started_at"`
	EndedAt    *string `json:"ended_at"`
}

func renderResources(rs []persistence.Resource) []resourceJSON {
	out := make([]resourceJSON, len(rs))
	for i, r := range rs {
		out[i] = resourceJSON{Type: r.ResourceType, URL: r.URL, MountPath: r.MountPath}
	}
	return out
}

func renderSession(sess *persistence.Session, rs []persistence.Resource) *sessionJSON {
	out := &sessionJSON{
		ID: sess.ID, AgentID: sess.AgentID, EnvironmentID: sess.EnvironmentID, Provider: sess.Provider,
		Status: sess.Status, ExitCode: sess.ExitCode, CreatedAt: isoTime(sess.CreatedAt), UpdatedAt: isoTime(sess.UpdatedAt),
		Resources: renderResources(rs), TurnCount: sess.TurnCount,
	}
	if sess.CurrentTurn > 0 {
		n := sess.CurrentTurn
		out.CurrentTurn = &n
	}
	if out.Provider == "" {
		out.Provider = sess.Runtime
	}
	return out
}

func (s *Server) sessionNotFound(err error) error {
	if errors.Is(err, persistence.ErrNotFound) {
		return errSessionNotFound
	}
	return err
}

// sessionCreate runs AoD's checks in order: body → agent → environment →
// runtime → backend → quota → insert → enqueue provisioning.
func (s *Server) sessionCreate(c *fiber.Ctx, p *principal) error {
	ctx := c.UserContext()
	b, err := body(c)
	if err != nil {
		return err
	}
	req, err := schema.DecodeSessionCreate(b)
	if err != nil {
		return err
	}
	if _, present := b["timeout"]; !present || b["timeout"] == nil {
		req.Timeout = int(s.cfg.DefaultTimeout / time.Second)
	}
	if !persistence.ValidUUID(req.AgentID) {
		return errAgentNotFound
	}
	agent, err := s.db.AgentGet(ctx, p.UserID, req.AgentID)
	if errors.Is(err, persistence.ErrNotFound) {
		return errAgentNotFound
	}
	if err != nil {
		return err
	}
	if agent.ArchivedAt != nil {
		return errSessionArchivedAgent
	}
	envID := agent.EnvironmentID
	if req.EnvironmentID != nil && *req.EnvironmentID != "" {
		envID = req.EnvironmentID
	}
	if envID != nil {
		if err := s.activeEnvironment(ctx, p.UserID, *envID, errSessionArchivedEnv); err != nil {
			return err
		}
	}
	rt := agent.Runtime
	if _, ok := runtimes.Parse(rt); !ok {
		if r, ok := runtimes.ForProvider(agent.Provider); ok {
			rt = string(r)
		} else {
			return &schema.StringError{Message: schema.UnknownProviderMessage(agent.Provider)}
		}
	}
	if err := s.backendUsable(ctx); err != nil {
		return errBackendNotConfigured
	}
	sess := &persistence.Session{
		UserID: p.UserID, AgentID: &agent.ID, EnvironmentID: envID, Provider: agent.Provider, Runtime: rt,
		Backend: s.cfg.BackendName, BackendHandle: s.cfg.SpriteNamePrefix + "-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12],
	}
	resources := make([]persistence.Resource, len(req.Resources))
	for i, r := range req.Resources {
		resources[i] = persistence.Resource{ResourceType: r.Type, URL: r.URL, MountPath: r.MountPath, Token: r.AuthorizationToken}
	}
	_, err = s.db.SessionCreate(ctx, &persistence.SessionCreateParams{
		Session: sess, Prompt: req.Prompt, SystemPrompt: agent.System, Timeout: req.Timeout, Resources: resources,
		SecretEnvVars: req.SecretEnvVars, DefaultLimit: s.cfg.DefaultMaxSessions,
	})
	var qe *persistence.QuotaError
	if errors.As(err, &qe) {
		return &apiError{status: fiber.StatusTooManyRequests, body: map[string]any{
			"detail": fmt.Sprintf("Concurrent session limit reached (%d/%d). Terminate an active session before starting a new one.", qe.Active, qe.Limit),
			"limit":  qe.Limit, "active": qe.Active,
		}}
	}
	if err != nil {
		return envGoneRace(err)
	}
	s.deps.Sessions.Kick(sess.ID)
	return writeJSON(c, fiber.StatusAccepted, struct {
		ID            string         `json:"id"`
		Status        string         `json:"status"`
		StreamURL     string         `json:"stream_url"`
		EnvironmentID *string        `json:"environment_id"`
		Resources     []resourceJSON `json:"resources"`
		CurrentTurn   int            `json:"current_turn"`
	}{sess.ID, sess.Status, "/sessions/" + sess.ID + "/stream", sess.EnvironmentID, renderResources(resources), 1})
}

// backendUsable reports whether sessions can run (D1).
func (s *Server) backendUsable(ctx context.Context) error {
	if s.deps.Backend == nil || s.deps.Sessions == nil {
		return errors.New("no sandbox backend")
	}
	return s.deps.Backend.Check(ctx)
}

func (s *Server) sessionList(c *fiber.Ctx, p *principal) error {
	rows, err := s.db.SessionList(c.UserContext(), p.UserID)
	if err != nil {
		return err
	}
	ids := make([]string, len(rows))
	for i := range rows {
		ids[i] = rows[i].ID
	}
	resources, err := s.db.SessionResourcesMany(c.UserContext(), ids)
	if err != nil {
		return err
	}
	out := make([]*sessionJSON, len(rows))
	for i := range rows {
		out[i] = renderSession(&rows[i], resources[rows[i].ID])
	}
	return writeJSON(c, fiber.StatusOK, list(out))
}

func (s *Server) sessionGet(c *fiber.Ctx, p *principal) error {
	sess, err := s.db.SessionGet(c.UserContext(), p.UserID, c.Params("id"))
	if err != nil {
		return s.sessionNotFound(err)
	}
	rs, err := s.db.SessionResourcesMany(c.UserContext(), []string{sess.ID})
	if err != nil {
		return err
	}
	return writeJSON(c, fiber.StatusOK, renderSession(sess, rs[sess.ID]))
}

func (s *Server) sessionTurns(c *fiber.Ctx, p *principal) error {
	turns, err := s.db.TurnList(c.UserContext(), p.UserID, c.Params("id"))
	if err != nil {
		return s.sessionNotFound(err)
	}
	out := make([]turnJSON, len(turns))
	for i, t := range turns {
		out[i] = turnJSON{TurnNumber: t.TurnNumber, Prompt: t.Prompt, Status: t.Status, ExitCode: t.ExitCode,
			CreatedAt: isoTime(t.CreatedAt), StartedAt: isoTimePtr(t.StartedAt), EndedAt: isoTimePtr(t.EndedAt)}
	}
	return writeJSON(c, fiber.StatusOK, list(out))
}

// promptStateError is the state pre-check of POST /prompt.
func promptStateError(status string) error {
	switch status {
	case persistence.StatusRunning:
		return errSessionRunning
	case persistence.StatusTerminated:
		return errSessionTerminated
	case persistence.StatusFailed:
		return errSessionFailed
	}
	return nil
}

// sessionPrompt queues the next turn, in AoD's order: 404 → state → body →
// backend lookup → locked re-check → pending turn → insert.
func (s *Server) sessionPrompt(c *fiber.Ctx, p *principal) error {
	ctx := c.UserContext()
	id := utils.CopyString(c.Params("id"))
	sess, err := s.db.SessionGet(ctx, p.UserID, id)
	if err != nil {
		return s.sessionNotFound(err)
	}
	if err := promptStateError(sess.Status); err != nil {
		return err
	}
	b, err := body(c)
	if err != nil {
		return err
	}
	req, err := schema.DecodePrompt(b)
	if err != nil {
		return err
	}
	if _, present := b["timeout"]; !present || b["timeout"] == nil {
		req.Timeout = int(s.cfg.DefaultTimeout / time.Second)
	}
	if s.backendUsable(ctx) != nil {
		return errBackendTokenMissing
	}
	if sess.BackendHandle == "" {
		return errBackendGone
	}
	bctx, bcancel := s.backendContext(c)
	_, err = s.deps.Backend.Get(bctx, sess.BackendHandle)
	bcancel()
	if err != nil {
		return errBackendGone
	}
	ctx, cancel := s.rearmDBDeadline(c)
	defer cancel()
	var turnNumber int
	_, err = s.db.SessionMutate(ctx, p.UserID, id, func(tx bun.Tx, cur *persistence.Session) (bool, error) {
		if err := promptStateError(cur.Status); err != nil {
			return false, err
		}
		if cur.Status == persistence.StatusPending {
			return false, errSessionPendingTurn
		}
		turnNumber = cur.CurrentTurn + 1
		if err := persistence.TurnInsert(ctx, tx, &persistence.Turn{SessionID: id, TurnNumber: turnNumber,
			Prompt: req.Prompt, Mode: string(runtimes.Continue), TimeoutSeconds: req.Timeout, Status: persistence.StatusPending}); err != nil {
			return false, err
		}
		cur.Prompt, cur.Status, cur.ExitCode = req.Prompt, persistence.StatusPending, nil
		return true, nil
	})
	if err != nil {
		return s.sessionNotFound(err)
	}
	s.deps.Sessions.Kick(id)
	return writeJSON(c, fiber.StatusAccepted, struct {
		ID          string `json:"id"`
		Status      string `json:"status"`
		StreamURL   string `json:"stream_url"`
		CurrentTurn int    `json:"current_turn"`
	}{id, persistence.StatusPending, "/sessions/" + id + "/stream", turnNumber})
}

// sessionTerminate marks the session terminated under its row lock, stops
// running work and destroys the sandbox in the background.
func (s *Server) sessionTerminate(c *fiber.Ctx, p *principal) error {
	ctx := c.UserContext()
	var handle string
	sess, err := s.db.SessionMutate(ctx, p.UserID, c.Params("id"), func(tx bun.Tx, cur *persistence.Session) (bool, error) {
		if cur.Status == persistence.StatusTerminated {
			return false, errSessionAlreadyTerm
		}
		handle = cur.BackendHandle
		cur.Status, cur.BackendHandle = persistence.StatusTerminated, ""
		// The handle is forgotten only together with a durable destroy
		// record, which the janitor retries until the backend confirms.
		if err := persistence.SandboxDestroyAdd(ctx, tx, cur.Backend, handle); err != nil {
			return false, err
		}
		// Turns that will never finish on their own end failed now; a
		// running turn's actor records the same when it stops.
		_, err := tx.NewUpdate().Table("session_turns").
			Set("status = ?", persistence.StatusFailed).Set("ended_at = ?", time.Now().UTC().Truncate(time.Microsecond)).
			Where("session_id = ?", cur.ID).Where("status IN (?)", bun.In([]string{persistence.StatusPending, persistence.StatusRunning})).
			Exec(ctx)
		return true, err
	})
	if err != nil {
		return s.sessionNotFound(err)
	}
	if s.deps.Sessions != nil {
		s.deps.Sessions.Terminate(sess.ID)
		s.deps.Sessions.Destroy(handle)
	}
	return writeJSON(c, fiber.StatusOK, struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}{sess.ID, persistence.StatusTerminated})
}

func (s *Server) sessionDelete(c *fiber.Ctx, p *principal) error {
	sess, err := s.db.SessionDelete(c.UserContext(), p.UserID, c.Params("id"))
	if errors.Is(err, persistence.ErrSessionActive) {
		return errSessionDeleteActive
	}
	if err != nil {
		return s.sessionNotFound(err)
	}
	if sess.BackendHandle != "" && s.deps.Sessions != nil {
		s.deps.Sessions.Destroy(sess.BackendHandle)
	}
	return writeJSON(c, fiber.StatusOK, map[string]any{"detail": "Session deleted"})
}
