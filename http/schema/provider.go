package schema

import (
	"slices"
	"strings"
)

// Providers an agent may use (D11), sorted.
var Providers = []string{"anthropic", "google", "openai"}

// Runtimes an agent may run on (D11), sorted.
var Runtimes = []string{"claude", "codex", "gemini", "opencode"}

// RuntimeOpenCode serves every provider.
const RuntimeOpenCode = "opencode"

// providerRuntime is each provider's default runtime (D11).
var providerRuntime = map[string]string{
	"anthropic": "claude",
	"google":    "gemini",
	"openai":    "codex",
}

// knownModelPrefixes are the "<prefix>/" model prefixes that must agree with
// the provider and are stripped (providers.py KNOWN_PROVIDER_PREFIXES).
var knownModelPrefixes = []string{"anthropic", "google", "kimi", "openai"}

// Normalisation messages.
const (
	MsgModelNonEmpty = "Model must be a non-empty string"
)

// DefaultRuntime returns the runtime a provider defaults to ("" for an
// unknown provider).
func DefaultRuntime(provider string) string { return providerRuntime[provider] }

// UnknownProviderMessage is the 422 string for a provider outside Providers:
// "Unknown provider: X. Must be one of: ['anthropic', 'google', 'openai']".
func UnknownProviderMessage(provider string) string {
	return "Unknown provider: " + provider + ". Must be one of: " + pyRepr(Providers)
}

// UnknownRuntimeMessage is the 422 string for a runtime outside Runtimes:
// "Unknown runtime: X. Must be one of: ['claude', 'codex', 'gemini', 'opencode']".
func UnknownRuntimeMessage(runtime string) string {
	return "Unknown runtime: " + runtime + ". Must be one of: " + pyRepr(Runtimes)
}

// RuntimeMismatchMessage is the 422 string when a runtime cannot serve a
// provider: "Runtime 'claude' cannot serve provider 'openai'".
func RuntimeMismatchMessage(runtime, provider string) string {
	return "Runtime " + pyReprString(runtime) + " cannot serve provider " + pyReprString(provider)
}

// NormalizeProviderModel trims and checks an agent's provider, model and
// runtime (aod-api.md §2.1, D11) and returns the values to store:
//
//   - provider must be one of Providers after trimming;
//   - the trimmed model must be non-empty; a "<prefix>/rest" model whose
//     prefix is one of anthropic, openai, google, kimi must name the provider
//     and is stored as the trimmed "rest";
//   - runtime "" (after trimming) defaults from the provider; otherwise it
//     must be one of Runtimes and serve the provider (opencode serves any).
//
// Failures are *StringError (422 with a string detail).
func NormalizeProviderModel(provider, model, runtime string) (string, string, string, error) {
	provider = pyStrip(provider)
	model = pyStrip(model)
	runtime = pyStrip(runtime)
	if !slices.Contains(Providers, provider) {
		return "", "", "", &StringError{Message: UnknownProviderMessage(provider)}
	}
	if model == "" {
		return "", "", "", &StringError{Message: MsgModelNonEmpty}
	}
	if prefix, rest, ok := strings.Cut(model, "/"); ok && slices.Contains(knownModelPrefixes, prefix) {
		if prefix != provider {
			return "", "", "", &StringError{Message: "Model provider prefix " + pyReprString(prefix) +
				" does not match provider " + pyReprString(provider)}
		}
		model = pyStrip(rest)
		if model == "" {
			return "", "", "", &StringError{Message: MsgModelNonEmpty}
		}
	}
	if runtime == "" {
		runtime = providerRuntime[provider]
	}
	if !slices.Contains(Runtimes, runtime) {
		return "", "", "", &StringError{Message: UnknownRuntimeMessage(runtime)}
	}
	if runtime != RuntimeOpenCode && providerRuntime[provider] != runtime {
		return "", "", "", &StringError{Message: RuntimeMismatchMessage(runtime, provider)}
	}
	return provider, model, runtime, nil
}
