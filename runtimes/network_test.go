package runtimes

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/aodhq/aod/sprites"
)

func TestNetworkRules(t *testing.T) {
	t.Parallel()

	require.Equal(t, []sprites.Rule{
		{Domain: "registry.npmjs.org", Action: "allow"},
		{Domain: "*.github.com", Action: "allow"},
		{Domain: "github.com", Action: "allow"},
		{Domain: "*", Action: "deny"},
	}, NetworkRules([]string{"registry.npmjs.org", "*.github.com", "github.com"}))

	denyAll := NetworkRules(nil)
	require.Equal(t, []sprites.Rule{{Domain: "*", Action: "deny"}}, denyAll)
	require.True(t, sprites.NetworkPolicy{Rules: denyAll}.DenyAll())
	require.Equal(t, denyAll, NetworkRules([]string{}))
}
