package schema

import (
	"maps"
)

// Agent field limits (aod-api.md §2.1), enforced on create and update.
const (
	MaxAgentNameLen     = 200
	MaxAgentProviderLen = 32
	MaxAgentModelLen    = 100
	MaxAgentRuntimeLen  = 32
)

// AgentCreate is a validated and normalised POST /agents body.
type AgentCreate struct {
	// Name is the agent name (≤200 characters).
	Name string
	// Provider, Model and Runtime are normalised by NormalizeProviderModel:
	// Provider is one of Providers, Model has any matching provider prefix
	// stripped, Runtime is the requested runtime or the provider's default.
	Provider string
	Model    string
	Runtime  string
	// System is the system prompt; "" when absent.
	System string
	// Description is "" when absent.
	Description string
	// EnvironmentID is the environment to attach; "" when absent, null or ""
	// (the reference treats all three as "no environment").
	EnvironmentID string
	// Skills and MCPServers are the arrays as submitted (never nil).
	Skills     []any
	MCPServers []any
	// Metadata is the free-form object as submitted (never nil).
	Metadata map[string]any
}

// DecodeAgentCreate validates a POST /agents body. Schema failures are a
// *ValidationError (422 list); when the schema passes, provider/model/runtime
// are normalised and failures there are a *StringError (422 string), the
// reference's order (parse → normalise → environment lookup).
func DecodeAgentCreate(body map[string]any) (*AgentCreate, error) {
	var e errs
	out := &AgentCreate{Skills: []any{}, MCPServers: []any{}, Metadata: map[string]any{}}

	out.Name = requiredString(&e, body, "name", MaxAgentNameLen)
	provider := requiredString(&e, body, "provider", MaxAgentProviderLen)
	model := ""
	if v, ok := body["model"]; !ok {
		e.add(missingErr(loc("model"), body))
	} else if s, fe := asString(v, loc("model"), MaxAgentModelLen); fe != nil {
		e.add(*fe)
	} else if pyStrip(s) == "" {
		e.add(valueErr(loc("model"), v, MsgModelNonEmpty))
	} else {
		model = s
	}
	runtime := optionalNullableString(&e, body, "runtime", MaxAgentRuntimeLen)
	out.System = optionalString(&e, body, "system", 0)
	out.Description = optionalString(&e, body, "description", 0)
	if id := optionalNullableString(&e, body, "environment_id", 0); id != nil {
		out.EnvironmentID = *id
	}
	if v, ok := body["skills"]; ok {
		if s, err := ValidateSkills(v); err != nil {
			e.add(err.(*ValidationError).Errors...)
		} else {
			out.Skills = s
		}
	}
	if v, ok := body["mcp_servers"]; ok {
		if s, err := ValidateMCPServers(v); err != nil {
			e.add(err.(*ValidationError).Errors...)
		} else {
			out.MCPServers = s
		}
	}
	if v, ok := body["metadata"]; ok {
		if m, fe := asDict(v, loc("metadata")); fe != nil {
			e.add(*fe)
		} else {
			out.Metadata = m
		}
	}
	if err := withNULCheck(e.err(), body, agentFields); err != nil {
		return nil, err
	}

	rt := ""
	if runtime != nil {
		rt = *runtime
	}
	var err error
	out.Provider, out.Model, out.Runtime, err = NormalizeProviderModel(provider, model, rt)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AgentUpdate is a validated PUT /agents/{id} body. Pointer and nil-able
// fields are nil when the key is absent or null, meaning "unchanged".
type AgentUpdate struct {
	// Version is the version the client last saw (optimistic concurrency).
	Version int64
	// Name, when set, replaces the name (≤200 characters).
	Name *string
	// Provider, Model and Runtime are raw (not normalised); resolve them
	// with ResolveProviderModel after the version check. An empty Provider
	// or Runtime also means unchanged; Model is never blank.
	Provider *string
	Model    *string
	Runtime  *string
	// System and Description, when set, replace the stored values.
	System      *string
	Description *string
	// EnvironmentIDSet reports whether the body had the environment_id key.
	// Set with a nil EnvironmentID is an explicit null: detach the
	// environment. Set with a non-nil value: look it up (404/409).
	EnvironmentIDSet bool
	EnvironmentID    *string
	// Skills and MCPServers, when non-nil (possibly empty), replace the
	// stored arrays whole.
	Skills     []any
	MCPServers []any
	// Metadata, when non-nil, is merged into the stored metadata with
	// MergeMetadata.
	Metadata map[string]any
}

// DecodeAgentUpdate validates a PUT /agents/{id} body (*ValidationError on
// failure). Unlike the reference it also enforces the create length limits.
func DecodeAgentUpdate(body map[string]any) (*AgentUpdate, error) {
	var e errs
	out := &AgentUpdate{}
	out.Version = requiredInt(&e, body, "version", intBounds{})
	out.Name = optionalNullableString(&e, body, "name", MaxAgentNameLen)
	out.Provider = optionalNullableString(&e, body, "provider", MaxAgentProviderLen)
	out.Model = optionalNullableString(&e, body, "model", MaxAgentModelLen)
	if out.Model != nil && pyStrip(*out.Model) == "" {
		e.add(valueErr(loc("model"), body["model"], MsgModelNonEmpty))
		out.Model = nil
	}
	out.Runtime = optionalNullableString(&e, body, "runtime", MaxAgentRuntimeLen)
	out.System = optionalNullableString(&e, body, "system", 0)
	out.Description = optionalNullableString(&e, body, "description", 0)
	_, out.EnvironmentIDSet = body["environment_id"]
	out.EnvironmentID = optionalNullableString(&e, body, "environment_id", 0)
	if v, ok := body["skills"]; ok && v != nil {
		if s, err := ValidateSkills(v); err != nil {
			e.add(err.(*ValidationError).Errors...)
		} else {
			out.Skills = s
		}
	}
	if v, ok := body["mcp_servers"]; ok && v != nil {
		if s, err := ValidateMCPServers(v); err != nil {
			e.add(err.(*ValidationError).Errors...)
		} else {
			out.MCPServers = s
		}
	}
	if v, ok := body["metadata"]; ok && v != nil {
		if m, fe := asDict(v, loc("metadata")); fe != nil {
			e.add(*fe)
		} else {
			out.Metadata = m
		}
	}
	if err := withNULCheck(e.err(), body, agentFields); err != nil {
		return nil, err
	}
	return out, nil
}

// ResolveProviderModel computes the agent's provider, model and runtime
// after this update, given the stored values, and normalises them with
// NormalizeProviderModel (*StringError on failure). A nil or empty Provider,
// Model or Runtime keeps the stored value, except that when the provider
// changes and no runtime is given, a stored runtime other than opencode is
// replaced by the new provider's default.
func (u *AgentUpdate) ResolveProviderModel(curProvider, curModel, curRuntime string) (provider, model, runtime string, err error) {
	provider = curProvider
	if u.Provider != nil && *u.Provider != "" {
		provider = *u.Provider
	}
	model = curModel
	if u.Model != nil && *u.Model != "" {
		model = *u.Model
	}
	runtime = curRuntime
	if u.Runtime != nil && *u.Runtime != "" {
		runtime = *u.Runtime
	} else if pyStrip(provider) != curProvider && curRuntime != RuntimeOpenCode {
		runtime = ""
	}
	return NormalizeProviderModel(provider, model, runtime)
}

// MergeMetadata applies a PUT metadata patch to the stored metadata and
// returns a new map: a key whose patch value is the string "" is deleted,
// any other value is set, keys absent from the patch are kept. Neither
// argument is modified.
func MergeMetadata(current, patch map[string]any) map[string]any {
	merged := maps.Clone(current)
	if merged == nil {
		merged = map[string]any{}
	}
	for k, v := range patch {
		if s, ok := v.(string); ok && s == "" {
			delete(merged, k)
			continue
		}
		merged[k] = v
	}
	return merged
}

// requiredString decodes a required `str` field.
func requiredString(e *errs, body map[string]any, key string, maxLen int) string {
	v, ok := body[key]
	if !ok {
		e.add(missingErr(loc(key), body))
		return ""
	}
	s, fe := asString(v, loc(key), maxLen)
	if fe != nil {
		e.add(*fe)
	}
	return s
}

// optionalString decodes a `str` field with default "".
func optionalString(e *errs, body map[string]any, key string, maxLen int) string {
	v, ok := body[key]
	if !ok {
		return ""
	}
	s, fe := asString(v, loc(key), maxLen)
	if fe != nil {
		e.add(*fe)
	}
	return s
}

// optionalNullableString decodes a `str | None = None` field: nil when
// absent or null.
func optionalNullableString(e *errs, body map[string]any, key string, maxLen int) *string {
	v, ok := body[key]
	if !ok || v == nil {
		return nil
	}
	s, fe := asString(v, loc(key), maxLen)
	if fe != nil {
		e.add(*fe)
		return nil
	}
	return &s
}

// requiredInt decodes a required `int` field.
func requiredInt(e *errs, body map[string]any, key string, b intBounds) int64 {
	v, ok := body[key]
	if !ok {
		e.add(missingErr(loc(key), body))
		return 0
	}
	n, fe := asInt(v, loc(key), b)
	if fe != nil {
		e.add(*fe)
	}
	return n
}
