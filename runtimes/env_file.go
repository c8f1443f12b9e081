package runtimes

import (
	"slices"
	"strings"
)

// EnvVar is one name=value pair in a fixed position.
type EnvVar struct {
	Name  string
	Value string
}

// EnvFile returns the body of EnvFilePath (/tmp/aod-env): one
// NAME=<ShellQuote(value)> line per variable, ending with a single newline,
// in this order (later lines win when the file is sourced):
//
//  1. static: runtime static env, in the order given (none unless
//     configured, e.g. Claude's OTEL_EXPORTER_OTLP_HEADERS);
//  2. AOD_SESSION_ID=<runtimeSessionID>, omitted when runtimeSessionID is "";
//  3. AOD_MODEL=<model>, omitted when model is "";
//  4. envVars (the environment's env_vars), sorted by name;
//  5. secretEnvVars (the session's secret_env_vars), sorted by name.
//
// Empty values in static, envVars and secretEnvVars are written, as NAME= followed by two single quotes.
// Names are written as given; they were validated upstream. With nothing to
// write the body is a single newline, as in the reference.
func EnvFile(static []EnvVar, runtimeSessionID, model string, envVars, secretEnvVars map[string]string) []byte {
	var b strings.Builder
	line := func(name, value string) {
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(ShellQuote(value))
		b.WriteByte('\n')
	}
	for _, v := range static {
		line(v.Name, v.Value)
	}
	if runtimeSessionID != "" {
		line("AOD_SESSION_ID", runtimeSessionID)
	}
	if model != "" {
		line("AOD_MODEL", model)
	}
	for _, m := range []map[string]string{envVars, secretEnvVars} {
		for _, k := range sortedKeys(m) {
			line(k, m[k])
		}
	}
	if b.Len() == 0 {
		return []byte("\n")
	}
	return []byte(b.String())
}

// GitCredentials returns the body of GitCredentialsPath: one line
// https://<token>:x-oauth-basic@github.com per non-empty token, in order,
// each ending with a newline. It returns nil when no token is non-empty; the
// git_credentials stage is then skipped.
func GitCredentials(tokens []string) []byte {
	var b strings.Builder
	for _, t := range tokens {
		if t == "" {
			continue
		}
		b.WriteString("https://")
		b.WriteString(t)
		b.WriteString(":x-oauth-basic@github.com\n")
	}
	if b.Len() == 0 {
		return nil
	}
	return []byte(b.String())
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
