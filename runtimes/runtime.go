package runtimes

// Runtime names an agent CLI. The zero value is not a valid runtime.
type Runtime string

// The runtimes aod can run (aod-api.md §6).
const (
	Claude   Runtime = "claude"
	Codex    Runtime = "codex"
	Gemini   Runtime = "gemini"
	OpenCode Runtime = "opencode"
)

// Providers, as stored on agents (decisions D11).
const (
	ProviderAnthropic = "anthropic"
	ProviderGoogle    = "google"
	ProviderOpenAI    = "openai"
)

// OpenCodeVersion is the opencode-ai npm version installed for OpenCode
// (decisions D11).
const OpenCodeVersion = "1.18.33"

// All returns every runtime in a fixed order: claude, codex, gemini, opencode.
func All() []Runtime {
	return []Runtime{Claude, Codex, Gemini, OpenCode}
}

// Parse returns the runtime named s. Names are exact and lowercase.
func Parse(s string) (Runtime, bool) {
	switch r := Runtime(s); r {
	case Claude, Codex, Gemini, OpenCode:
		return r, true
	}
	return "", false
}

// ForProvider returns the default runtime for a provider: anthropic → claude,
// openai → codex, google → gemini (decisions D11). Other providers have none.
func ForProvider(provider string) (Runtime, bool) {
	switch provider {
	case ProviderAnthropic:
		return Claude, true
	case ProviderOpenAI:
		return Codex, true
	case ProviderGoogle:
		return Gemini, true
	}
	return "", false
}

// Serves reports whether r can run models of the given provider: opencode
// serves every known provider, every other runtime only its own (decisions
// D11). An unknown provider is served by none.
func (r Runtime) Serves(provider string) bool {
	def, ok := ForProvider(provider)
	if !ok {
		return false
	}
	return r == OpenCode || r == def
}

// Valid reports whether r is one of the known runtimes.
func (r Runtime) Valid() bool {
	_, ok := Parse(string(r))
	return ok
}

// String returns the runtime's name.
func (r Runtime) String() string { return string(r) }

// SkillsRoot returns the directory under which inline skills are written as
// <root>/<name>/SKILL.md, or "" for an unknown runtime.
func SkillsRoot(r Runtime) string {
	switch r {
	case Claude:
		return "/home/sprite/.claude/skills"
	case Codex:
		return "/home/sprite/.codex/skills"
	case Gemini:
		return "/home/sprite/.gemini/skills"
	case OpenCode:
		return "/home/sprite/.config/opencode/skills"
	}
	return ""
}

// SkillsAgent returns the skills.sh `--agent` id of r, or "" for an unknown
// runtime.
func SkillsAgent(r Runtime) string {
	switch r {
	case Claude:
		return "claude-code"
	case Codex:
		return "codex"
	case Gemini:
		return "gemini-cli"
	case OpenCode:
		return "opencode"
	}
	return ""
}

// InstallCommand returns the argv run in the install_runtime stage (before
// the network policy), or nil when the runtime is pre-installed (codex,
// gemini). The stage's events are written even when this is nil.
func InstallCommand(r Runtime) []string {
	switch r {
	case Claude:
		return []string{"bash", "-lc", "claude update"}
	case OpenCode:
		return []string{"bash", "-lc", "npm install -g opencode-ai@" + OpenCodeVersion}
	}
	return nil
}

// configDir is the directory holding r's config file when it is not directly
// in the home directory (claude writes /home/sprite/.claude.json).
func configDir(r Runtime) string {
	switch r {
	case Codex:
		return "/home/sprite/.codex"
	case Gemini:
		return "/home/sprite/.gemini"
	case OpenCode:
		return "/home/sprite/.config/opencode"
	}
	return ""
}
