package runtimes

import (
	"strings"
	"unicode/utf8"
)

// Stage names, as stored in stage log rows and sent in stage events
// (aod-api.md §7.1), in the order they run.
const (
	StageCreateSprite   = "create_sprite"
	StageInstallRuntime = "install_runtime"
	StageNetworkPolicy  = "network_policy"
	StageEnvFile        = "env_file"
	StageGitCredentials = "git_credentials"
	StageProvisionSetup = "provision_setup"
	StageRuntimeConfig  = "runtime_config"
	StageSkills         = "skills"
	// StageRuntimeStart is written (started only) at the start of every
	// turn, by the turn job.
	StageRuntimeStart = "runtime_start"
)

// StderrTailRunes is how much of the provision script's stderr (in
// characters, from the end) a ProvisionScriptFailed message keeps.
const StderrTailRunes = 2000

// CreateSpriteFailed is the create_sprite failure message:
// "Failed to create Sprite: <err>".
func CreateSpriteFailed(err error) string { return "Failed to create Sprite: " + errText(err) }

// PrepareFailed is the failure message of the env_file and git_credentials
// stages, and of network_policy when the backend rejects the policy (as the
// reference does): "Failed to prepare Sprite: <err>".
func PrepareFailed(err error) string { return "Failed to prepare Sprite: " + errText(err) }

// NetworkPolicyFailed is the network_policy failure message when the
// backend refuses the policy (the local backend for a rule it cannot apply,
// such as an allowed host that is not a host name):
// "Failed to apply network policy: <err>".
func NetworkPolicyFailed(err error) string {
	return "Failed to apply network policy: " + errText(err)
}

// InstallRuntimeFailed is the install_runtime failure message:
// "Failed to install runtime: <err>".
func InstallRuntimeFailed(err error) string { return "Failed to install runtime: " + errText(err) }

// RuntimeConfigFailed is the runtime_config failure message, including a
// ConfigFiles error: "Failed to write runtime config: <err>".
func RuntimeConfigFailed(err error) string {
	return "Failed to write runtime config: " + errText(err)
}

// SkillsFailed is the skills failure message: "Failed to write skills: <err>".
func SkillsFailed(err error) string { return "Failed to write skills: " + errText(err) }

// ProvisionScriptFailed is the provision_setup failure message:
// "Provisioning script failed: <err>", followed by "\nstderr:\n<tail>" when
// stderr holds anything but whitespace. The tail is the last
// StderrTailRunes characters of stderr decoded as UTF-8, each invalid byte
// and each NUL replaced by U+FFFD (the message is stored as text). For a
// non-zero exit, pass an error whose text is "exit N".
func ProvisionScriptFailed(err error, stderr []byte) string {
	msg := "Provisioning script failed: " + errText(err)
	tail := stderrTail(stderr, StderrTailRunes)
	if strings.TrimSpace(tail) != "" {
		msg += "\nstderr:\n" + tail
	}
	return msg
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// stderrTail decodes b (invalid bytes and NUL → U+FFFD) and returns its
// last n runes.
func stderrTail(b []byte, n int) string {
	runes := make([]rune, 0, min(len(b), 4*n))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == 0 {
			r = utf8.RuneError
		}
		runes = append(runes, r)
		b = b[size:]
	}
	if len(runes) > n {
		runes = runes[len(runes)-n:]
	}
	return string(runes)
}
