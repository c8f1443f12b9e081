package schema

import (
	"fmt"
	"regexp"
	"strings"
)

// Session and prompt limits (aod-api.md §2.3, §2.4).
const (
	DefaultTimeout          = 600
	MinTimeout              = 10
	MaxTimeout              = 3600
	MaxResourcesPerSession  = 10
	ResourceTypeGitHubRepo  = "github_repository"
	gitHubRepoResourceClass = "GitHubRepoResource"
)

// GitHub resource messages (value_error texts).
const (
	MsgGitHubURL            = "Must be a valid https://github.com/<owner>/<repo> URL"
	MsgMountPathAbsolute    = "mount_path must be an absolute path"
	MsgMountPathSpriteRoot  = "mount_path must not be the Sprite root"
	MsgDuplicateMountPath   = "Duplicate mount_path in resources"
	msgMaxResourcesTemplate = "Maximum %d resources per session"
)

// MsgMaxResources is "Maximum 10 resources per session".
var MsgMaxResources = fmt.Sprintf(msgMaxResourcesTemplate, MaxResourcesPerSession)

// gitHubURLRE is ASCII-only (Go's \w) and anchored at the very end.
var gitHubURLRE = regexp.MustCompile(`^https://github\.com/[\w.-]+/[\w.-]+(\.git)?$`)

var timeoutBounds = intBounds{ge: MinTimeout, le: MaxTimeout, hasGE: true, hasLE: true}

// GitHubRepoResource is one validated entry of a session's "resources".
type GitHubRepoResource struct {
	// Type is always ResourceTypeGitHubRepo.
	Type string
	// URL is the repository URL with one trailing ".git" removed.
	URL string
	// MountPath is the submitted mount_path, or /workspace/<last URL
	// segment> when it was absent or null.
	MountPath string
	// AuthorizationToken is the optional PAT ("" when absent or null); it is
	// stored encrypted and never echoed.
	AuthorizationToken string
}

// SessionCreate is a validated POST /sessions body.
type SessionCreate struct {
	// AgentID is the agent to run (not checked to be a UUID; an unknown or
	// malformed id is the caller's 404 "Agent not found").
	AgentID string
	// Prompt is the first turn's prompt, raw.
	Prompt string
	// Timeout is the per-turn limit in seconds, 10..3600, default 600.
	Timeout int
	// EnvironmentIDSet reports whether the body had the environment_id key;
	// EnvironmentID is nil when absent or null. The reference falls back to
	// the agent's default environment when the id is absent, null or "".
	EnvironmentIDSet bool
	EnvironmentID    *string
	// Resources are the repositories to clone (never nil, at most 10,
	// resolved mount paths unique).
	Resources []GitHubRepoResource
	// SecretEnvVars are session-scoped secrets (never nil).
	SecretEnvVars map[string]string
}

// DecodeSessionCreate validates a POST /sessions body (*ValidationError on
// failure).
func DecodeSessionCreate(body map[string]any) (*SessionCreate, error) {
	var e errs
	out := &SessionCreate{Resources: []GitHubRepoResource{}, SecretEnvVars: map[string]string{}}
	out.AgentID = requiredString(&e, body, "agent_id", 0)
	out.Prompt = requiredString(&e, body, "prompt", 0)
	out.Timeout = optionalTimeout(&e, body)
	_, out.EnvironmentIDSet = body["environment_id"]
	out.EnvironmentID = optionalNullableString(&e, body, "environment_id", 0)
	if v, ok := body["resources"]; ok {
		if r := decodeResources(&e, v); r != nil {
			out.Resources = r
		}
	}
	if v, ok := body["secret_env_vars"]; ok {
		if m := decodeEnvVars(&e, v, "secret_env_vars"); m != nil {
			out.SecretEnvVars = m
		}
	}
	if err := withNULCheck(e.err(), body, sessionFields); err != nil {
		return nil, err
	}
	return out, nil
}

// Prompt is a validated POST /sessions/{id}/prompt body.
type Prompt struct {
	// Prompt is the next turn's prompt, raw.
	Prompt string
	// Timeout is the per-turn limit in seconds, 10..3600, default 600.
	Timeout int
}

// DecodePrompt validates a POST /sessions/{id}/prompt body
// (*ValidationError on failure).
func DecodePrompt(body map[string]any) (*Prompt, error) {
	var e errs
	out := &Prompt{}
	out.Prompt = requiredString(&e, body, "prompt", 0)
	out.Timeout = optionalTimeout(&e, body)
	if err := withNULCheck(e.err(), body, promptFields); err != nil {
		return nil, err
	}
	return out, nil
}

func optionalTimeout(e *errs, body map[string]any) int {
	v, ok := body["timeout"]
	if !ok {
		return DefaultTimeout
	}
	n, fe := asInt(v, loc("timeout"), timeoutBounds)
	if fe != nil {
		e.add(*fe)
		return 0
	}
	return int(n)
}

// decodeResources validates `list[GitHubRepoResource]` plus the count and
// mount-path uniqueness checks; nil on failure.
func decodeResources(e *errs, v any) []GitHubRepoResource {
	l := loc("resources")
	items, fe := asList(v, l)
	if fe != nil {
		e.add(*fe)
		return nil
	}
	out := make([]GitHubRepoResource, 0, len(items))
	var bad []FieldError
	for i, item := range items {
		r, fes := decodeResource(item, append(cloneLoc(l), i))
		if fes != nil {
			bad = append(bad, fes...)
			continue
		}
		out = append(out, r)
	}
	if bad != nil {
		e.add(bad...)
		return nil
	}
	if len(out) > MaxResourcesPerSession {
		e.add(valueErr(l, v, MsgMaxResources))
		return nil
	}
	seen := map[string]bool{}
	for _, r := range out {
		if seen[r.MountPath] {
			e.add(valueErr(l, v, MsgDuplicateMountPath))
			return nil
		}
		seen[r.MountPath] = true
	}
	return out
}

func decodeResource(v any, l []any) (GitHubRepoResource, []FieldError) {
	m, ok := v.(map[string]any)
	if !ok {
		return GitHubRepoResource{}, []FieldError{{
			Type:  TypeModelType,
			Loc:   l,
			Msg:   "Input should be a valid dictionary or instance of " + gitHubRepoResourceClass,
			Input: v,
			Ctx:   map[string]any{"class_name": gitHubRepoResourceClass},
		}}
	}
	var e errs
	field := func(k string) []any { return append(cloneLoc(l), k) }
	r := GitHubRepoResource{Type: ResourceTypeGitHubRepo}

	if t, ok := m["type"]; !ok {
		e.add(missingErr(field("type"), m))
	} else if s, isStr := t.(string); !isStr || s != ResourceTypeGitHubRepo {
		e.add(FieldError{
			Type:  TypeLiteralError,
			Loc:   field("type"),
			Msg:   "Input should be " + pyReprString(ResourceTypeGitHubRepo),
			Input: t,
			Ctx:   map[string]any{"expected": pyReprString(ResourceTypeGitHubRepo)},
		})
	}

	if u, ok := m["url"]; !ok {
		e.add(missingErr(field("url"), m))
	} else if s, fe := asString(u, field("url"), 0); fe != nil {
		e.add(*fe)
	} else if !gitHubURLRE.MatchString(s) {
		e.add(valueErr(field("url"), u, MsgGitHubURL))
	} else {
		r.URL = strings.TrimSuffix(s, ".git")
	}

	var mountPath string
	if mp, ok := m["mount_path"]; ok && mp != nil {
		if s, fe := asString(mp, field("mount_path"), 0); fe != nil {
			e.add(*fe)
		} else if !strings.HasPrefix(s, "/") {
			e.add(valueErr(field("mount_path"), mp, MsgMountPathAbsolute))
		} else if s == "/" || s == "/home/sprite" {
			e.add(valueErr(field("mount_path"), mp, MsgMountPathSpriteRoot))
		} else {
			mountPath = s
		}
	}

	if tok, ok := m["authorization_token"]; ok && tok != nil {
		if s, fe := asString(tok, field("authorization_token"), 0); fe != nil {
			e.add(*fe)
		} else {
			r.AuthorizationToken = s
		}
	}
	if len(e) > 0 {
		return GitHubRepoResource{}, e
	}
	r.MountPath = resolvedMountPath(r.URL, mountPath)
	return r, nil
}

// resolvedMountPath is the reference's resolved_mount_path: mountPath when
// set, else /workspace/<last segment of the URL>.
func resolvedMountPath(url, mountPath string) string {
	if mountPath != "" {
		return mountPath
	}
	trimmed := strings.TrimRight(url, "/")
	return "/workspace/" + trimmed[strings.LastIndexByte(trimmed, '/')+1:]
}
