package runtimes

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStages(t *testing.T) {
	t.Parallel()

	require.Equal(t,
		[]string{"create_sprite", "install_runtime", "network_policy", "env_file", "git_credentials", "provision_setup", "runtime_config", "skills", "runtime_start"},
		[]string{StageCreateSprite, StageInstallRuntime, StageNetworkPolicy, StageEnvFile, StageGitCredentials, StageProvisionSetup, StageRuntimeConfig, StageSkills, StageRuntimeStart})
}

func TestFailureMessages(t *testing.T) {
	t.Parallel()

	err := errors.New("boom")
	require.Equal(t, "Failed to create Sprite: boom", CreateSpriteFailed(err))
	require.Equal(t, "Failed to prepare Sprite: boom", PrepareFailed(err))
	require.Equal(t, "Failed to install runtime: boom", InstallRuntimeFailed(err))
	require.Equal(t, "Failed to write runtime config: boom", RuntimeConfigFailed(err))
	require.Equal(t, "Failed to write skills: boom", SkillsFailed(err))
	require.Equal(t, "Failed to apply network policy: host allow-lists are not supported by the local backend",
		NetworkPolicyFailed(errors.New("host allow-lists are not supported by the local backend")))
	require.Equal(t, "Failed to create Sprite: ", CreateSpriteFailed(nil))

	t.Run("ProvisionScript", func(t *testing.T) {
		t.Parallel()
		exit1 := errors.New("exit 1")
		require.Equal(t, "Provisioning script failed: exit 1", ProvisionScriptFailed(exit1, nil))
		require.Equal(t, "Provisioning script failed: exit 1", ProvisionScriptFailed(exit1, []byte(" \n\t\n")))
		require.Equal(t, "Provisioning script failed: exit 1\nstderr:\nE: Unable to locate package nope\n",
			ProvisionScriptFailed(exit1, []byte("E: Unable to locate package nope\n")))
	})

	t.Run("StderrTail", func(t *testing.T) {
		t.Parallel()
		// 1500 'a' then 1000 'é' (2 bytes each): the tail is the last 2000
		// characters, not bytes.
		stderr := strings.Repeat("a", 1500) + strings.Repeat("é", 1000)
		msg := ProvisionScriptFailed(errors.New("exit 2"), []byte(stderr))
		require.Equal(t, "Provisioning script failed: exit 2\nstderr:\n"+strings.Repeat("a", 1000)+strings.Repeat("é", 1000), msg)

		exact := strings.Repeat("x", 2000)
		require.Equal(t, "Provisioning script failed: e\nstderr:\n"+exact, ProvisionScriptFailed(errors.New("e"), []byte(exact)))
	})

	t.Run("StderrInvalidBytes", func(t *testing.T) {
		t.Parallel()
		msg := ProvisionScriptFailed(errors.New("e"), []byte("bad \xff\xfe nul \x00 end"))
		require.Equal(t, "Provisioning script failed: e\nstderr:\nbad \ufffd\ufffd nul \ufffd end", msg)
	})
}
