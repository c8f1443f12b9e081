package http

import (
	"encoding/json"
	"reflect"
	"time"

	"github.com/aodhq/aod/persistence"
)

// isoTime formats a timestamp as AoD does: ISO 8601, microseconds, offset.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000+00:00") }

func isoTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := isoTime(*t)
	return &s
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// rawOr returns stored JSON, or def when the column is empty.
func rawOr(r json.RawMessage, def string) json.RawMessage {
	if len(r) == 0 {
		return json.RawMessage(def)
	}
	return r
}

// agentVersionJSON is AgentVersion: the Agent shape without updated_at and
// archived_at; id is the agent's id. Field order follows the contract.
type agentVersionJSON struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Name          string          `json:"name"`
	Description   *string         `json:"description"`
	System        *string         `json:"system"`
	Provider      string          `json:"provider"`
	Model         string          `json:"model"`
	Runtime       string          `json:"runtime"`
	EnvironmentID *string         `json:"environment_id"`
	Skills        json.RawMessage `json:"skills"`
	MCPServers    json.RawMessage `json:"mcp_servers"`
	Metadata      json.RawMessage `json:"metadata"`
	Version       int             `json:"version"`
	CreatedAt     string          `json:"created_at"`
}

// agentJSON is the Agent resource: the version shape plus updated_at and
// archived_at (embedded fields encode first, keeping the contract's order).
type agentJSON struct {
	agentVersionJSON
	UpdatedAt  string  `json:"updated_at"`
	ArchivedAt *string `json:"archived_at"`
}

func renderAgent(a *persistence.Agent) *agentJSON {
	return &agentJSON{
		agentVersionJSON: *renderAgentVersion(&persistence.AgentVersion{
			AgentID: a.ID, Version: a.Version, Name: a.Name, Description: a.Description, System: a.System,
			Provider: a.Provider, Model: a.Model, Runtime: a.Runtime, EnvironmentID: a.EnvironmentID,
			Skills: a.Skills, MCPServers: a.MCPServers, Metadata: a.Metadata, CreatedAt: a.CreatedAt,
		}),
		UpdatedAt: isoTime(a.UpdatedAt), ArchivedAt: isoTimePtr(a.ArchivedAt),
	}
}

func renderAgentVersion(v *persistence.AgentVersion) *agentVersionJSON {
	return &agentVersionJSON{
		ID: v.AgentID, Type: "agent", Name: v.Name, Description: nullIfEmpty(v.Description), System: nullIfEmpty(v.System),
		Provider: v.Provider, Model: v.Model, Runtime: v.Runtime, EnvironmentID: v.EnvironmentID,
		Skills: rawOr(v.Skills, "[]"), MCPServers: rawOr(v.MCPServers, "[]"), Metadata: rawOr(v.Metadata, "{}"),
		Version: v.Version, CreatedAt: isoTime(v.CreatedAt),
	}
}

// environmentVersionJSON is EnvironmentVersion: the Environment shape
// without updated_at and archived_at; id is the environment's id. env_vars
// is never rendered.
type environmentVersionJSON struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Packages    json.RawMessage `json:"packages"`
	SetupScript *string         `json:"setup_script"`
	Networking  map[string]any  `json:"networking"`
	Version     int             `json:"version"`
	CreatedAt   string          `json:"created_at"`
}

// environmentJSON is the Environment resource.
type environmentJSON struct {
	environmentVersionJSON
	UpdatedAt  string  `json:"updated_at"`
	ArchivedAt *string `json:"archived_at"`
}

// networkingJSON renders {"type": T} plus the config keys when T is
// limited and the config is non-empty.
func networkingJSON(typ string, config json.RawMessage) map[string]any {
	out := map[string]any{"type": typ}
	if typ != "limited" {
		return out
	}
	var cfg map[string]any
	if err := json.Unmarshal(config, &cfg); err != nil {
		return out
	}
	for k, v := range cfg {
		if k != "type" {
			out[k] = v
		}
	}
	return out
}

func renderEnvironment(e *persistence.Environment) *environmentJSON {
	return &environmentJSON{
		environmentVersionJSON: *renderEnvironmentVersion(&persistence.EnvironmentVersion{
			EnvironmentID: e.ID, Version: e.Version, Name: e.Name, Packages: e.Packages, SetupScript: e.SetupScript,
			NetworkingType: e.NetworkingType, NetworkingConfig: e.NetworkingConfig, CreatedAt: e.CreatedAt,
		}),
		UpdatedAt: isoTime(e.UpdatedAt), ArchivedAt: isoTimePtr(e.ArchivedAt),
	}
}

func renderEnvironmentVersion(v *persistence.EnvironmentVersion) *environmentVersionJSON {
	return &environmentVersionJSON{
		ID: v.EnvironmentID, Type: "environment", Name: v.Name, Packages: rawOr(v.Packages, "{}"),
		SetupScript: nullIfEmpty(v.SetupScript), Networking: networkingJSON(v.NetworkingType, v.NetworkingConfig),
		Version: v.Version, CreatedAt: isoTime(v.CreatedAt),
	}
}

// list wraps rows as {"data": [...]}.
func list[T any](rows []T) map[string]any {
	if rows == nil {
		rows = []T{}
	}
	return map[string]any{"data": rows}
}

// mustJSON encodes a validated value for storage.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // values come from decoded JSON; they always encode
	}
	return b
}

// sameJSON compares two JSON documents semantically.
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
