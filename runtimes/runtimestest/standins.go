// Package runtimestest provides stand-in executables for sandbox tests
// (D21): agent CLIs named claude, codex, gemini and opencode that print
// realistic stream-json, echo their argv and stdin, and can be told by the
// prompt to fail, sleep or print a lot; and package managers (apt-get, npm,
// pip, cargo, gem, go, npx) that only record their argv.
//
// Bind the directory WriteStandins fills at /usr/local/bin inside the
// sandbox (it precedes /usr/bin on a login shell's PATH).
package runtimestest

import (
	"fmt"
	"os"
	"path/filepath"
)

// RecordFile is where every stand-in appends "<name> <argv...>" lines.
const RecordFile = "/tmp/aod-standins.log"

// Stage blocking, for fault tests that must kill aod while a given command
// runs. When the stand-ins directory holds BlockFile and its first line is
// "<name>" or "<name> <first argument>" of a stand-in's invocation (e.g.
// "claude update", "apt-get", "npx"), that stand-in writes its name to the
// FIFO BlockedFIFO (which the test creates with mode 0666 and reads, to
// learn that the command is running) and then sleeps for an hour instead of
// doing its work. Remove BlockFile to let later invocations through.
const (
	BlockFile   = ".block"
	BlockedFIFO = ".blocked"
)

// blockHook is the start of every stand-in script (see BlockFile).
const blockHook = `bin=$(dirname "$0")
if [ -f "$bin/` + BlockFile + `" ]; then
  want=$(head -n1 "$bin/` + BlockFile + `")
  if [ "$want" = "$(basename "$0")" ] || [ "$want" = "$(basename "$0") $1" ]; then
    echo "$want" > "$bin/` + BlockedFIFO + `"
    exec sleep 3600
  fi
fi
`

// agentScript is the agent CLI stand-in. The prompt (stdin) may carry
// directives, one per line:
//
//	exit:N     exit with status N after printing
//	sleep:S    sleep S seconds before the result (in 0.1 s steps, printing a tick each second)
//	flood:N    print N numbered lines ("%08d\n", 9 bytes each) to stdout as fast as possible
//	stderr:T   print T to stderr
//	slow:N     print N lines "line %04d", one every 50 ms
//	quiet:S    sleep S seconds without printing
//	bytes:N    print N bytes of "x" (head -c syntax: 64M, 1G) as fast as possible
const agentScript = `#!/bin/bash
` + blockHook + `name=$(basename "$0")
echo "$name $*" >> ` + RecordFile + `
prompt=$(cat)
printf '{"type":"system","subtype":"init","session_id":"%s","model":"%s","cwd":"%s"}\n' "$AOD_SESSION_ID" "$AOD_MODEL" "$PWD"
printf 'argv: %s\n' "$*"
printf 'stdin: %s\n' "$prompt"
code=0
while IFS= read -r line; do
  case "$line" in
    exit:*) code=${line#exit:} ;;
    sleep:*) s=${line#sleep:}; for ((i=0; i<s; i++)); do echo "tick $i"; sleep 1; done ;;
    flood:*) seq -f '%08.0f' 1 "${line#flood:}" ;;
    stderr:*) echo "${line#stderr:}" >&2 ;;
    quiet:*) sleep "${line#quiet:}" ;;
    bytes:*) head -c "${line#bytes:}" /dev/zero | tr '\0' x ;;
    slow:*) for ((i=1; i<=${line#slow:}; i++)); do printf 'line %04d\n' "$i"; sleep 0.05; done ;;
  esac
done <<< "$prompt"
printf '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"done"}]}}\n'
printf '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done","session_id":"%s"}\n' "$AOD_SESSION_ID"
exit "$code"
`

// recorderScript is a package-manager stand-in.
const recorderScript = `#!/bin/bash
` + blockHook + `echo "$(basename "$0") $*" >> ` + RecordFile + `
exit 0
`

// Agents are the agent CLI names.
var Agents = []string{"claude", "codex", "gemini", "opencode"}

// Recorders are the package-manager stand-ins.
var Recorders = []string{"apt-get", "npm", "pip", "cargo", "gem", "go", "npx"}

// WriteStandins fills dir with the stand-in executables.
func WriteStandins(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("runtimestest: %w", err)
	}
	for _, n := range Agents {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(agentScript), 0o755); err != nil {
			return fmt.Errorf("runtimestest: %w", err)
		}
	}
	for _, n := range Recorders {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(recorderScript), 0o755); err != nil {
			return fmt.Errorf("runtimestest: %w", err)
		}
	}
	return nil
}
