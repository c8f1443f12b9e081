// Package schema decodes and validates the JSON request bodies of the aod
// API (agents, environments, sessions and prompts) the way the reference
// Python/Django service does with pydantic v2.
//
// Every function here is pure: it takes a body already decoded into a
// map[string]any (the caller should use json.Decoder.UseNumber so integers
// keep their precision) and returns either a typed request value or an error
// the HTTP layer renders unchanged:
//
//   - *ValidationError: 422 with {"detail": [...]}, a list of pydantic v2
//     error items (see ValidationError.Detail).
//   - *StringError: 422 with {"detail": "<message>"}, used for provider,
//     model and runtime normalisation.
//
// Detail422 turns either into the "detail" value. The reference renders the
// list with pydantic's errors(include_context=False), so Detail omits "ctx";
// DetailWithContext keeps it. Either encodes to JSON equal in value to the
// reference's (Go escapes <, > and & where Python escapes non-ASCII).
//
// Unknown keys are ignored. Fields are validated in the reference model's
// field order and every field error is reported, as pydantic does. Scalars
// follow pydantic's lax Python-mode coercion: an integer field accepts
// "120", 120.0 and booleans; a string field accepts only strings.
//
// Deliberate differences from the reference, each noted where it applies:
// objects have no key order once decoded into a map, so errors that depend
// on key order (first unknown package manager, first bad env var key) pick
// the first key in sorted order; regular expressions are anchored at the
// very end of the text (Python's "$" also matches before a final newline);
// and a few inputs that crash the reference with a 500 (unhashable MCP
// server names, non-string networking types) get a 422 instead.
package schema
