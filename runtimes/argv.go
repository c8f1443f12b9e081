package runtimes

// Paths and commands inside the sandbox.
const (
	// WorkDir is the working directory of every turn.
	WorkDir = "/home/sprite"
	// EnvFilePath is the env file written by the env_file stage and sourced
	// by every turn.
	EnvFilePath = "/tmp/aod-env"
	// GitCredentialsPath is git's credential store file.
	GitCredentialsPath = "/tmp/.git-credentials"
	// ProvisionScriptPath is where the provision script is written.
	ProvisionScriptPath = "/tmp/aod-provision.sh"
	// ShimScript is the bash program that wraps every turn's argv: it
	// exports the env file's variables, then execs the runtime.
	ShimScript = `set -a; source /tmp/aod-env; set +a; exec "$@"`
)

// ProvisionArgv returns the argv that runs the provision script.
func ProvisionArgv() []string {
	return []string{"bash", "-l", ProvisionScriptPath}
}

// Mode says whether a turn starts a conversation or continues one.
type Mode string

// Turn modes.
const (
	// Run is the first turn of a session.
	Run Mode = "run"
	// Continue is every later turn.
	Continue Mode = "continue"
)

// ParseMode returns the mode named s ("run" or "continue").
func ParseMode(s string) (Mode, bool) {
	switch m := Mode(s); m {
	case Run, Continue:
		return m, true
	}
	return "", false
}

// TurnSpec is what a turn's argv depends on.
type TurnSpec struct {
	Runtime Runtime
	// Provider is the agent's provider; only opencode uses it, as the prefix
	// of --model <provider>/<model>.
	Provider string
	// Model is the agent's model, passed to the CLI as given.
	Model string
	// RuntimeSessionID is the server-minted session id; only claude uses it
	// (--session-id on run, --resume on continue). It must be set for a
	// claude Continue turn.
	RuntimeSessionID string
	Mode             Mode
}

// Argv returns the full exec argv of a turn: the bash shim (ShimScript)
// followed by the runtime's own argv. Run it with cwd WorkDir and the prompt
// on stdin, then stdin EOF. Any Mode other than Continue is treated as Run.
//
// Runtime argv, run / continue:
//
//	claude --dangerously-skip-permissions --print --verbose --output-format stream-json --model M --session-id ID
//	claude --dangerously-skip-permissions --print --verbose --output-format stream-json --model M --resume ID
//	codex exec -m M --dangerously-bypass-approvals-and-sandbox --json
//	codex exec resume --last -m M --dangerously-bypass-approvals-and-sandbox --json
//	gemini -m M --output-format stream-json
//	gemini -m M --resume --output-format stream-json
//	opencode run --model P/M --format json
//	opencode run --model P/M --format json --continue
//
// gemini's --resume is an optional-value string option (yargs); followed by
// another flag it takes "" which the CLI reads as "latest". -m/--model is a
// top-level gemini option, accepted anywhere before the prompt. For opencode
// an empty Provider gives --model M. An unknown runtime returns nil.
func Argv(spec TurnSpec) []string {
	cli := runtimeArgv(spec)
	if cli == nil {
		return nil
	}
	return append([]string{"bash", "-lc", ShimScript, "--"}, cli...)
}

func runtimeArgv(spec TurnSpec) []string {
	cont := spec.Mode == Continue
	switch spec.Runtime {
	case Claude:
		flag := "--session-id"
		if cont {
			flag = "--resume"
		}
		return []string{
			"claude", "--dangerously-skip-permissions", "--print", "--verbose",
			"--output-format", "stream-json", "--model", spec.Model,
			flag, spec.RuntimeSessionID,
		}
	case Codex:
		argv := []string{"codex", "exec"}
		if cont {
			argv = append(argv, "resume", "--last")
		}
		return append(argv, "-m", spec.Model, "--dangerously-bypass-approvals-and-sandbox", "--json")
	case Gemini:
		argv := []string{"gemini", "-m", spec.Model}
		if cont {
			argv = append(argv, "--resume")
		}
		return append(argv, "--output-format", "stream-json")
	case OpenCode:
		model := spec.Model
		if spec.Provider != "" {
			model = spec.Provider + "/" + spec.Model
		}
		argv := []string{"opencode", "run", "--model", model, "--format", "json"}
		if cont {
			argv = append(argv, "--continue")
		}
		return argv
	}
	return nil
}
