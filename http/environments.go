package http

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/aodhq/aod/http/schema"
	"github.com/aodhq/aod/persistence"
)

var (
	errEnvNotFound       = detail(fiber.StatusNotFound, "Environment not found")
	errEnvArchived       = detail(fiber.StatusConflict, "Environment is already archived")
	errEnvUpdateArchived = detail(fiber.StatusConflict, "Cannot update an archived environment")
	errEnvInUse          = detail(fiber.StatusConflict, "Cannot delete environment with existing sessions")
)

func envNameTaken(name string) *apiError {
	return detail(fiber.StatusConflict, fmt.Sprintf("An active environment named '%s' already exists", name))
}

func (s *Server) environmentRoutes() {
	s.view("/environments", true, map[string]handlerFunc{
		fiber.MethodGet:  s.environmentList,
		fiber.MethodPost: s.environmentCreate,
	})
	s.view("/environments/:id", true, map[string]handlerFunc{
		fiber.MethodGet: s.environmentGet,
		fiber.MethodPut: s.environmentUpdate,
	})
	s.view("/environments/:id/delete", true, map[string]handlerFunc{fiber.MethodDelete: s.environmentDelete})
	s.view("/environments/:id/archive", false, map[string]handlerFunc{fiber.MethodPost: s.environmentArchive})
	s.view("/environments/:id/versions", false, map[string]handlerFunc{fiber.MethodGet: s.environmentVersions})
}

func envError(err error, name string) error {
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		return errEnvNotFound
	case errors.Is(err, persistence.ErrNameTaken):
		return envNameTaken(name)
	case errors.Is(err, persistence.ErrEnvironmentInUse):
		return errEnvInUse
	}
	return err
}

func (s *Server) environmentCreate(c *fiber.Ctx, p *principal) error {
	b, err := body(c)
	if err != nil {
		return err
	}
	req, err := schema.DecodeEnvironmentCreate(b)
	if err != nil {
		return err
	}
	e := &persistence.Environment{
		UserID: p.UserID, Name: req.Name, Packages: mustJSON(req.Packages), EnvVars: req.EnvVars,
		SetupScript: req.SetupScript, NetworkingType: req.Networking.Type, NetworkingConfig: mustJSON(req.Networking.Config),
	}
	if err := s.db.EnvironmentCreate(c.UserContext(), e); err != nil {
		return envError(err, req.Name)
	}
	return writeJSON(c, fiber.StatusCreated, renderEnvironment(e))
}

func (s *Server) environmentList(c *fiber.Ctx, p *principal) error {
	rows, err := s.db.EnvironmentList(c.UserContext(), p.UserID)
	if err != nil {
		return err
	}
	out := make([]*environmentJSON, len(rows))
	for i := range rows {
		out[i] = renderEnvironment(&rows[i])
	}
	return writeJSON(c, fiber.StatusOK, list(out))
}

func (s *Server) environmentGet(c *fiber.Ctx, p *principal) error {
	e, err := s.db.EnvironmentLookup(c.UserContext(), p.UserID, c.Params("id"))
	if err != nil {
		return envError(err, "")
	}
	return writeJSON(c, fiber.StatusOK, renderEnvironment(e))
}

func (s *Server) environmentUpdate(c *fiber.Ctx, p *principal) error {
	b, err := body(c)
	if err != nil {
		return err
	}
	req, err := schema.DecodeEnvironmentUpdate(b)
	if err != nil {
		return err
	}
	var newName string
	e, err := s.db.EnvironmentMutate(c.UserContext(), p.UserID, c.Params("id"), func(e *persistence.Environment) (persistence.Change, error) {
		if e.ArchivedAt != nil {
			return persistence.NoChange, errEnvUpdateArchived
		}
		if int64(e.Version) != req.Version {
			return persistence.NoChange, versionMismatch(e.Version, req.Version)
		}
		changed := false
		if req.Name != nil && *req.Name != e.Name {
			e.Name, changed = *req.Name, true
		}
		newName = e.Name
		if req.Packages != nil {
			if next := mustJSON(req.Packages); !sameJSON(e.Packages, next) {
				e.Packages, changed = next, true
			}
		}
		if req.EnvVars != nil && !reflect.DeepEqual(e.EnvVars, req.EnvVars) {
			e.EnvVars, changed = req.EnvVars, true
		}
		if req.SetupScript != nil && *req.SetupScript != e.SetupScript {
			e.SetupScript, changed = *req.SetupScript, true
		}
		if n := req.Networking; n != nil {
			next := mustJSON(n.Config)
			if n.Type != e.NetworkingType || !sameJSON(e.NetworkingConfig, next) {
				e.NetworkingType, e.NetworkingConfig, changed = n.Type, next, true
			}
		}
		if !changed {
			return persistence.NoChange, nil
		}
		return persistence.NewVersion, nil
	})
	if err != nil {
		return envError(err, newName)
	}
	return writeJSON(c, fiber.StatusOK, renderEnvironment(e))
}

func (s *Server) environmentArchive(c *fiber.Ctx, p *principal) error {
	e, err := s.db.EnvironmentMutate(c.UserContext(), p.UserID, c.Params("id"), func(e *persistence.Environment) (persistence.Change, error) {
		if e.ArchivedAt != nil {
			return persistence.NoChange, errEnvArchived
		}
		t := time.Now().UTC().Truncate(time.Microsecond)
		e.ArchivedAt = &t
		return persistence.Save, nil
	})
	if err != nil {
		return envError(err, "")
	}
	return writeJSON(c, fiber.StatusOK, renderEnvironment(e))
}

func (s *Server) environmentDelete(c *fiber.Ctx, p *principal) error {
	if err := s.db.EnvironmentDelete(c.UserContext(), p.UserID, c.Params("id")); err != nil {
		return envError(err, "")
	}
	return writeJSON(c, fiber.StatusOK, map[string]any{"detail": "Environment deleted"})
}

func (s *Server) environmentVersions(c *fiber.Ctx, p *principal) error {
	rows, err := s.db.EnvironmentVersions(c.UserContext(), p.UserID, c.Params("id"))
	if err != nil {
		return envError(err, "")
	}
	out := make([]*environmentVersionJSON, len(rows))
	for i := range rows {
		out[i] = renderEnvironmentVersion(&rows[i])
	}
	return writeJSON(c, fiber.StatusOK, list(out))
}
