package runtimes

import (
	"errors"
	"fmt"
	"strings"
)

// Config file paths (aod-api.md §6).
const (
	ClaudeConfigPath   = "/home/sprite/.claude.json"
	CodexConfigPath    = "/home/sprite/.codex/config.toml"
	CodexAuthPath      = "/home/sprite/.codex/auth.json"
	GeminiConfigPath   = "/home/sprite/.gemini/settings.json"
	OpenCodeConfigPath = "/home/sprite/.config/opencode/opencode.json"
)

// ErrUnsupportedMCPHeader is matched (errors.Is) by the error ConfigFiles
// returns when a codex url server has a header codex cannot express: a
// literal bearer token or any header other than
// "Authorization: Bearer ${VAR}".
var ErrUnsupportedMCPHeader = errors.New("unsupported MCP header")

// headerError is a codex header rejection. Its text is the reference's
// message alone; it matches ErrUnsupportedMCPHeader.
type headerError string

func (e headerError) Error() string { return string(e) }

// Is reports whether target is ErrUnsupportedMCPHeader.
func (e headerError) Is(target error) bool { return target == ErrUnsupportedMCPHeader }

// mcpServer is one normalised entry of an agent's mcp_servers list. Missing
// fields take the worker's defaults: type "url", url "", headers {},
// command "", args [], env {}.
type mcpServer struct {
	name    string
	typ     string // "url", "stdio", or anything else (skipped)
	url     string
	headers map[string]any
	command string
	args    []any
	env     map[string]any
}

func parseMCPServers(servers []any) []mcpServer {
	var out []mcpServer
	for _, raw := range servers {
		m, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		name, ok := m["name"].(string)
		if !ok {
			continue
		}
		s := mcpServer{name: name, typ: "url"}
		if t, present := m["type"]; present {
			s.typ, _ = t.(string)
		}
		s.url = textOf(m["url"])
		s.command = textOf(m["command"])
		s.headers, _ = m["headers"].(map[string]any)
		s.env, _ = m["env"].(map[string]any)
		s.args, _ = m["args"].([]any)
		if s.args == nil {
			s.args = []any{}
		}
		out = append(out, s)
	}
	return out
}

// textOf returns a string as is, nil as "", and anything else as its JSON
// text.
func textOf(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	}
	return pyJSON(v, -1)
}

// ConfigFiles returns the files the runtime_config stage writes, in order
// (aod-api.md §6). mcpServers is the agent's mcp_servers list; url and
// stdio servers render, other types are skipped, and a runtime's MCP config
// file is returned only when at least one server renders. JSON files are
// indented by two spaces with Python's escaping and no trailing newline;
// headers and env keys are sorted.
//
//   - claude: ClaudeConfigPath {"mcpServers": {name: entry}}; url →
//     {"type": "http", "url", "headers" if non-empty}; stdio → {"type":
//     "stdio", "command", "args" (always), "env" if non-empty}.
//   - gemini: GeminiConfigPath {"mcpServers": ...}; url → {"httpUrl",
//     "trust": true, "headers"?}; stdio → {"command", "args", "trust": true,
//     "env"?}.
//   - opencode: OpenCodeConfigPath {"mcp": ...}; url → {"type": "remote",
//     "url", "enabled": true, "headers"?}; stdio → {"type": "local",
//     "command": [command, args...], "enabled": true, "environment"?}.
//   - codex: first CodexAuthPath {"OPENAI_API_KEY": "<key>"} + "\n", mode
//     0600, when OPENAI_API_KEY is non-empty in secretEnvVars, else in
//     envVars; then CodexConfigPath, TOML with one [mcp_servers.<name>]
//     table per server: url → url = "...", bearer_token_env_var = "VAR" for
//     an "Authorization: Bearer ${VAR}" header (name case-insensitive),
//     required = true; stdio → command = "...", args = [...] when non-empty,
//     and a [mcp_servers.<name>.env] table when env is non-empty. Any other
//     header, or a literal bearer token, fails with an error matching
//     ErrUnsupportedMCPHeader, meant for RuntimeConfigFailed.
//
// Config files have mode 0644. An unknown runtime has no files.
func ConfigFiles(r Runtime, mcpServers []any, secretEnvVars, envVars map[string]string) ([]File, error) {
	servers := parseMCPServers(mcpServers)
	var files []File
	switch r {
	case Claude, Gemini, OpenCode:
		if body, ok := jsonConfig(r, servers); ok {
			files = append(files, File{Path: jsonConfigPath(r), Data: []byte(body), Mode: 0o644})
		}
	case Codex:
		if key := openAIKey(secretEnvVars, envVars); key != "" {
			body := pyJSON(object{{"OPENAI_API_KEY", key}}, -1) + "\n"
			files = append(files, File{Path: CodexAuthPath, Data: []byte(body), Mode: 0o600})
		}
		body, err := codexConfig(servers)
		if err != nil {
			return nil, err
		}
		if body != "" {
			files = append(files, File{Path: CodexConfigPath, Data: []byte(body), Mode: 0o644})
		}
	}
	return files, nil
}

// openAIKey resolves codex's API key: secret env vars win over the
// environment's env vars; an empty value counts as absent.
func openAIKey(secretEnvVars, envVars map[string]string) string {
	if k := secretEnvVars["OPENAI_API_KEY"]; k != "" {
		return k
	}
	return envVars["OPENAI_API_KEY"]
}

func jsonConfigPath(r Runtime) string {
	switch r {
	case Claude:
		return ClaudeConfigPath
	case Gemini:
		return GeminiConfigPath
	}
	return OpenCodeConfigPath
}

// jsonConfig renders claude's, gemini's or opencode's MCP config. ok is
// false when no server renders.
func jsonConfig(r Runtime, servers []mcpServer) (string, bool) {
	var entries object
	for _, s := range servers {
		var e object
		switch s.typ {
		case "url":
			switch r {
			case Claude:
				e = object{{"type", "http"}, {"url", s.url}}
			case Gemini:
				e = object{{"httpUrl", s.url}, {"trust", true}}
			case OpenCode:
				e = object{{"type", "remote"}, {"url", s.url}, {"enabled", true}}
			}
			if len(s.headers) > 0 {
				e = append(e, member{"headers", s.headers})
			}
		case "stdio":
			envKey := "env"
			switch r {
			case Claude:
				e = object{{"type", "stdio"}, {"command", s.command}, {"args", s.args}}
			case Gemini:
				e = object{{"command", s.command}, {"args", s.args}, {"trust", true}}
			case OpenCode:
				e = object{{"type", "local"}, {"command", append([]any{s.command}, s.args...)}, {"enabled", true}}
				envKey = "environment"
			}
			if len(s.env) > 0 {
				e = append(e, member{envKey, s.env})
			}
		default:
			continue
		}
		entries = setMember(entries, s.name, e)
	}
	if len(entries) == 0 {
		return "", false
	}
	top := "mcpServers"
	if r == OpenCode {
		top = "mcp"
	}
	return pyJSON(object{{top, entries}}, 2), true
}

// setMember sets key in o, replacing an earlier value in place (as a
// Python dict assignment would) or appending.
func setMember(o object, key string, value any) object {
	for i := range o {
		if o[i].key == key {
			o[i].value = value
			return o
		}
	}
	return append(o, member{key, value})
}

// codexConfig renders codex's config.toml; "" when no server renders. Per
// url or stdio server, in list order, separated by blank lines:
//
//	[mcp_servers.<name>]
//	url = "<url>"
//	bearer_token_env_var = "<VAR>"     (for "Authorization: Bearer ${VAR}")
//	required = true
//
//	[mcp_servers.<name>]
//	command = "<command>"
//	args = ["a", "b"]                  (when args is non-empty)
//	[mcp_servers.<name>.env]           (when env is non-empty)
//	K = "v"
//
// The Authorization header name is matched case-insensitively and its value
// must be "Bearer " followed by ${VAR} with a non-empty VAR (surrounding
// spaces ignored). Anything else fails the whole config. Strings use TOML
// basic-string escaping; names and env keys that are not bare TOML keys are
// quoted.
func codexConfig(servers []mcpServer) (string, error) {
	var lines []string
	for _, s := range servers {
		table := "mcp_servers." + tomlKey(s.name)
		switch s.typ {
		case "url":
			lines = append(lines, "["+table+"]", "url = "+tomlString(s.url))
			seenAuth := false
			for _, k := range sortedKeys(s.headers) {
				v := textOf(s.headers[k])
				if !strings.EqualFold(k, "authorization") || !strings.HasPrefix(v, "Bearer ") {
					return "", headerError(fmt.Sprintf("MCP server %s: Codex config does not support header %s; only 'Authorization: Bearer ${ENV_VAR}' is supported",
						pyRepr(s.name), pyRepr(k)))
				}
				token := strings.TrimSpace(strings.TrimPrefix(v, "Bearer "))
				if len(token) < 4 || !strings.HasPrefix(token, "${") || !strings.HasSuffix(token, "}") {
					return "", headerError(fmt.Sprintf("MCP server %s: Codex only supports env-var Bearer tokens (e.g. 'Bearer ${MY_TOKEN}'); got a literal value",
						pyRepr(s.name)))
				}
				if seenAuth {
					return "", headerError(fmt.Sprintf("MCP server %s: Codex config supports only one Authorization header",
						pyRepr(s.name)))
				}
				seenAuth = true
				lines = append(lines, "bearer_token_env_var = "+tomlString(token[2:len(token)-1]))
			}
			lines = append(lines, "required = true")
		case "stdio":
			lines = append(lines, "["+table+"]", "command = "+tomlString(s.command))
			if len(s.args) > 0 {
				args := make([]string, len(s.args))
				for i, a := range s.args {
					args[i] = tomlString(textOf(a))
				}
				lines = append(lines, "args = ["+strings.Join(args, ", ")+"]")
			}
			if len(s.env) > 0 {
				lines = append(lines, "["+table+".env]")
				for _, k := range sortedKeys(s.env) {
					lines = append(lines, tomlKey(k)+" = "+tomlString(textOf(s.env[k])))
				}
			}
		default:
			continue
		}
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n"), nil
}

// pyRepr quotes s roughly as Python's repr does, for error messages.
func pyRepr(s string) string {
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}
