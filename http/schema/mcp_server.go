package schema

import "fmt"

// MCP server limits and types (aod-api.md §3.4).
const (
	MaxMCPServersPerAgent = 20
	MCPServerTypeStdio    = "stdio"
	MCPServerTypeURL      = "url"
)

var mcpServerTypes = []string{MCPServerTypeStdio, MCPServerTypeURL}

// ValidateMCPServers validates an agent's "mcp_servers" value (aod-api.md
// §3.4) and returns it unchanged, exactly as submitted (no defaults are
// filled in). v must be a JSON array (else a list_type error). The first rule
// broken is reported as one value_error at loc ["mcp_servers"], for example
// "Value error, mcp_servers[0] (url): missing required field: url".
//
// Beyond the reference, which only checks presence, this also requires name,
// url and command to be strings and headers/env to be objects and args a
// list when present and not null (the reference crashes or writes a broken
// runtime config for those).
func ValidateMCPServers(v any) ([]any, error) {
	l := loc("mcp_servers")
	list, fe := asList(v, l)
	if fe != nil {
		return nil, &ValidationError{Errors: []FieldError{*fe}}
	}
	if msg := mcpServersProblem(list); msg != "" {
		return nil, &ValidationError{Errors: []FieldError{valueErr(l, v, msg)}}
	}
	return list, nil
}

func mcpServersProblem(servers []any) string {
	names := map[string]bool{}
	for i, raw := range servers {
		server, ok := raw.(map[string]any)
		if !ok {
			return fmt.Sprintf("mcp_servers[%d] must be an object", i)
		}
		rawName, ok := server["name"]
		if !ok {
			return fmt.Sprintf("mcp_servers[%d] missing required field: name", i)
		}
		name, ok := rawName.(string)
		if !ok {
			return fmt.Sprintf("mcp_servers[%d].name must be a string", i)
		}
		stype, ok := server["type"]
		if !ok {
			stype = MCPServerTypeURL
		}
		switch stype {
		case MCPServerTypeURL:
			if msg := mcpFields(server, i, MCPServerTypeURL, "url", map[string]string{"headers": "an object"}); msg != "" {
				return msg
			}
		case MCPServerTypeStdio:
			if msg := mcpFields(server, i, MCPServerTypeStdio, "command", map[string]string{"args": "a list", "env": "an object"}); msg != "" {
				return msg
			}
		default:
			return fmt.Sprintf("mcp_servers[%d]: unknown type %s. Must be one of: %s", i, pyRepr(stype), pyRepr(mcpServerTypes))
		}
		if names[name] {
			return fmt.Sprintf("mcp_servers[%d]: duplicate name %s", i, pyReprString(name))
		}
		names[name] = true
	}
	if len(servers) > MaxMCPServersPerAgent {
		return fmt.Sprintf("Maximum %d MCP servers per agent", MaxMCPServersPerAgent)
	}
	return ""
}

// mcpFields checks the required string field of a server type and the shape
// of its optional container fields.
func mcpFields(server map[string]any, i int, stype, required string, optional map[string]string) string {
	v, ok := server[required]
	if !ok {
		return fmt.Sprintf("mcp_servers[%d] (%s): missing required field: %s", i, stype, required)
	}
	if _, ok := v.(string); !ok {
		return fmt.Sprintf("mcp_servers[%d] (%s): %s must be a string", i, stype, required)
	}
	for _, field := range sortedKeys(optional) {
		v, ok := server[field]
		if !ok || v == nil {
			continue
		}
		want := optional[field]
		var good bool
		switch want {
		case "a list":
			_, good = v.([]any)
		default:
			_, good = v.(map[string]any)
		}
		if !good {
			return fmt.Sprintf("mcp_servers[%d] (%s): %s must be %s", i, stype, field, want)
		}
	}
	return ""
}
