package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/aodhq/aod/http/schema"
	"github.com/aodhq/aod/persistence"
)

var (
	errAgentNotFound       = detail(fiber.StatusNotFound, "Agent not found")
	errAgentArchived       = detail(fiber.StatusConflict, "Agent is already archived")
	errAgentUpdateArchived = detail(fiber.StatusConflict, "Cannot update an archived agent")
	errEnvAssignArchived   = detail(fiber.StatusConflict, "Cannot assign an archived environment to an agent")
)

func versionMismatch(current int, sent int64) *apiError {
	return detail(fiber.StatusConflict, fmt.Sprintf("Version mismatch: expected %d, got %d", current, sent))
}

func (s *Server) agentRoutes() {
	s.view("/agents", true, map[string]handlerFunc{
		fiber.MethodGet:  s.agentList,
		fiber.MethodPost: s.agentCreate,
	})
	s.view("/agents/:id", true, map[string]handlerFunc{
		fiber.MethodGet: s.agentGet,
		fiber.MethodPut: s.agentUpdate,
	})
	s.view("/agents/:id/archive", false, map[string]handlerFunc{fiber.MethodPost: s.agentArchive})
	s.view("/agents/:id/versions", false, map[string]handlerFunc{fiber.MethodGet: s.agentVersions})
}

// envGoneRace maps a foreign-key refusal of an insert or update that
// references an environment to 404 "Environment not found": the
// environment passed the handler's check, then was deleted before the
// write.
func envGoneRace(err error) error {
	if persistence.IsForeignKeyViolation(err) {
		return errEnvNotFound
	}
	return err
}

// agentEnvironment resolves an environment an agent is being attached to.
func (s *Server) agentEnvironment(c *fiber.Ctx, p *principal, id string) error {
	return s.activeEnvironment(c.UserContext(), p.UserID, id, errEnvAssignArchived)
}

// activeEnvironment checks that the caller's environment exists (404) and
// is not archived (archivedErr).
func (s *Server) activeEnvironment(ctx context.Context, userID int64, id string, archivedErr error) error {
	if !persistence.ValidUUID(id) {
		return errEnvNotFound
	}
	env, err := s.db.EnvironmentLookup(ctx, userID, id)
	if errors.Is(err, persistence.ErrNotFound) {
		return errEnvNotFound
	}
	if err != nil {
		return err
	}
	if env.ArchivedAt != nil {
		return archivedErr
	}
	return nil
}

func (s *Server) agentCreate(c *fiber.Ctx, p *principal) error {
	b, err := body(c)
	if err != nil {
		return err
	}
	req, err := schema.DecodeAgentCreate(b)
	if err != nil {
		return err
	}
	a := &persistence.Agent{
		UserID: p.UserID, Name: req.Name, Description: req.Description, System: req.System,
		Provider: req.Provider, Model: req.Model, Runtime: req.Runtime,
		Skills: mustJSON(req.Skills), MCPServers: mustJSON(req.MCPServers), Metadata: mustJSON(req.Metadata),
	}
	if req.EnvironmentID != "" {
		if err := s.agentEnvironment(c, p, req.EnvironmentID); err != nil {
			return err
		}
		a.EnvironmentID = &req.EnvironmentID
	}
	if err := s.db.AgentCreate(c.UserContext(), a); err != nil {
		return envGoneRace(err)
	}
	return writeJSON(c, fiber.StatusCreated, renderAgent(a))
}

func (s *Server) agentList(c *fiber.Ctx, p *principal) error {
	rows, err := s.db.AgentList(c.UserContext(), p.UserID)
	if err != nil {
		return err
	}
	out := make([]*agentJSON, len(rows))
	for i := range rows {
		out[i] = renderAgent(&rows[i])
	}
	return writeJSON(c, fiber.StatusOK, list(out))
}

func (s *Server) agentGet(c *fiber.Ctx, p *principal) error {
	a, err := s.db.AgentGet(c.UserContext(), p.UserID, c.Params("id"))
	if errors.Is(err, persistence.ErrNotFound) {
		return errAgentNotFound
	}
	if err != nil {
		return err
	}
	return writeJSON(c, fiber.StatusOK, renderAgent(a))
}

// agentUpdate follows AoD's order: parse → resolve environment → lock row →
// archived → version → normalise provider/model → diff → metadata merge →
// new version only when something changed.
func (s *Server) agentUpdate(c *fiber.Ctx, p *principal) error {
	b, err := body(c)
	if err != nil {
		return err
	}
	req, err := schema.DecodeAgentUpdate(b)
	if err != nil {
		return err
	}
	if req.EnvironmentIDSet && req.EnvironmentID != nil && *req.EnvironmentID != "" {
		if err := s.agentEnvironment(c, p, *req.EnvironmentID); err != nil {
			return err
		}
	}
	a, err := s.db.AgentMutate(c.UserContext(), p.UserID, c.Params("id"), func(a *persistence.Agent) (persistence.Change, error) {
		if a.ArchivedAt != nil {
			return persistence.NoChange, errAgentUpdateArchived
		}
		if int64(a.Version) != req.Version {
			return persistence.NoChange, versionMismatch(a.Version, req.Version)
		}
		provider, model, runtime, err := req.ResolveProviderModel(a.Provider, a.Model, a.Runtime)
		if err != nil {
			return persistence.NoChange, err
		}
		changed := false
		set := func(dst *string, v string) {
			if *dst != v {
				*dst, changed = v, true
			}
		}
		set(&a.Provider, provider)
		set(&a.Model, model)
		set(&a.Runtime, runtime)
		if req.Name != nil {
			set(&a.Name, *req.Name)
		}
		if req.System != nil {
			set(&a.System, *req.System)
		}
		if req.Description != nil {
			set(&a.Description, *req.Description)
		}
		if req.EnvironmentIDSet {
			var next *string
			if req.EnvironmentID != nil && *req.EnvironmentID != "" {
				next = req.EnvironmentID
			}
			if (a.EnvironmentID == nil) != (next == nil) || (next != nil && *a.EnvironmentID != *next) {
				a.EnvironmentID, changed = next, true
			}
		}
		setJSON := func(dst *json.RawMessage, v any) {
			if next := mustJSON(v); !sameJSON(*dst, next) {
				*dst, changed = next, true
			}
		}
		if req.Skills != nil {
			setJSON(&a.Skills, req.Skills)
		}
		if req.MCPServers != nil {
			setJSON(&a.MCPServers, req.MCPServers)
		}
		if req.Metadata != nil {
			var cur map[string]any
			if err := json.Unmarshal(rawOr(a.Metadata, "{}"), &cur); err != nil {
				return persistence.NoChange, fmt.Errorf("decode stored metadata: %w", err)
			}
			setJSON(&a.Metadata, schema.MergeMetadata(cur, req.Metadata))
		}
		if !changed {
			return persistence.NoChange, nil
		}
		return persistence.NewVersion, nil
	})
	if errors.Is(err, persistence.ErrNotFound) {
		return errAgentNotFound
	}
	if err != nil {
		return envGoneRace(err)
	}
	return writeJSON(c, fiber.StatusOK, renderAgent(a))
}

func (s *Server) agentArchive(c *fiber.Ctx, p *principal) error {
	a, err := s.db.AgentMutate(c.UserContext(), p.UserID, c.Params("id"), func(a *persistence.Agent) (persistence.Change, error) {
		if a.ArchivedAt != nil {
			return persistence.NoChange, errAgentArchived
		}
		t := time.Now().UTC().Truncate(time.Microsecond)
		a.ArchivedAt = &t
		return persistence.Save, nil
	})
	if errors.Is(err, persistence.ErrNotFound) {
		return errAgentNotFound
	}
	if err != nil {
		return err
	}
	return writeJSON(c, fiber.StatusOK, renderAgent(a))
}

func (s *Server) agentVersions(c *fiber.Ctx, p *principal) error {
	rows, err := s.db.AgentVersions(c.UserContext(), p.UserID, c.Params("id"))
	if errors.Is(err, persistence.ErrNotFound) {
		return errAgentNotFound
	}
	if err != nil {
		return err
	}
	out := make([]*agentVersionJSON, len(rows))
	for i := range rows {
		out[i] = renderAgentVersion(&rows[i])
	}
	return writeJSON(c, fiber.StatusOK, list(out))
}
