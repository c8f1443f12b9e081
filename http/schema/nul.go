package schema

import (
	"strings"
)

// MsgNoNUL is the message of a NUL character in a stored string. Neither
// database stores U+0000 in text (Postgres refuses it in text and jsonb),
// so it is a 422 here instead of a failed insert (issue 9 defect 10).
const MsgNoNUL = "String must not contain NUL characters"

// Stored fields of each request body, in model field order: only these are
// checked (unknown keys are ignored, as the reference ignores them).
var (
	agentFields       = []string{"name", "description", "system", "provider", "model", "runtime", "environment_id", "skills", "mcp_servers", "metadata"}
	environmentFields = []string{"name", "packages", "env_vars", "setup_script", "networking"}
	sessionFields     = []string{"agent_id", "prompt", "environment_id", "resources", "secret_env_vars"}
	promptFields      = []string{"prompt"}
)

// withNULCheck returns err when decoding already failed; otherwise a
// *ValidationError listing every string (value or object key) under the
// given fields of body that contains a NUL character, as pydantic
// value_error items ("Value error, String must not contain NUL
// characters"), located at the string (a key at [..., key, "[key]"], as
// pydantic locates dict key errors).
func withNULCheck(err error, body map[string]any, fields []string) error {
	if err != nil {
		return err
	}
	var e errs
	for _, f := range fields {
		if v, ok := body[f]; ok {
			findNUL(&e, v, loc(f))
		}
	}
	return e.err()
}

func findNUL(e *errs, v any, l []any) {
	switch t := v.(type) {
	case string:
		if strings.IndexByte(t, 0) >= 0 {
			e.add(valueErr(l, t, MsgNoNUL))
		}
	case []any:
		for i, x := range t {
			findNUL(e, x, append(cloneLoc(l), i))
		}
	case map[string]any:
		for _, k := range sortedKeys(t) {
			if strings.IndexByte(k, 0) >= 0 {
				e.add(valueErr(append(cloneLoc(l), k, "[key]"), k, MsgNoNUL))
			}
			findNUL(e, t[k], append(cloneLoc(l), k))
		}
	}
}
