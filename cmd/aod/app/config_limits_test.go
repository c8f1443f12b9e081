package app

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites/runner"
)

func TestLoadConfigLimits(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(env(nil))
	require.NoError(t, err)
	require.Equal(t, runner.Limits{Memory: 2 << 30, Pids: 512, CPU: 2, Disk: 10 << 30, NoFile: 4096}, c.LocalLimits)

	c, err = LoadConfig(env(map[string]string{
		"AOD_LOCAL_MEMORY": "512MiB", "AOD_LOCAL_SWAP": "1G", "AOD_LOCAL_PIDS": "100",
		"AOD_LOCAL_CPU": "0.5", "AOD_LOCAL_DISK": "20GiB", "AOD_LOCAL_NOFILE": "1024",
	}))
	require.NoError(t, err)
	require.Equal(t, runner.Limits{Memory: 512 << 20, Swap: 1 << 30, Pids: 100, CPU: 0.5, Disk: 20 << 30, NoFile: 1024}, c.LocalLimits)

	c, err = LoadConfig(env(map[string]string{"AOD_LOCAL_CPU": "0", "AOD_LOCAL_LIMITS": "off"}))
	require.NoError(t, err)
	require.True(t, c.LocalLimits.Off)
	require.Negative(t, c.LocalLimits.CPU, "0 cores means no quota")

	for _, bad := range []struct{ name, value string }{
		{"AOD_LOCAL_LIMITS", "no"},
		{"AOD_LOCAL_MEMORY", "lots"},
		{"AOD_LOCAL_MEMORY", "1MiB"},
		{"AOD_LOCAL_SWAP", "-1G"},
		{"AOD_LOCAL_PIDS", "2"},
		{"AOD_LOCAL_CPU", "-1"},
		{"AOD_LOCAL_CPU", "0.001"},
		{"AOD_LOCAL_DISK", "2P"},
		{"AOD_LOCAL_NOFILE", "10"},
	} {
		_, err := LoadConfig(env(map[string]string{bad.name: bad.value}))
		require.ErrorContains(t, err, "invalid "+bad.name, bad.value)
		require.NotContains(t, err.Error(), "\n")
	}
}
