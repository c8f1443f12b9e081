package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSingleOwnsEverything(t *testing.T) {
	t.Parallel()
	o := Single{Name: "node-a"}
	for _, id := range []string{"a", "b", "0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90"} {
		node, local := o.Owner(id)
		require.True(t, local)
		require.Equal(t, "node-a", node)
	}
	require.Equal(t, "node-a", o.Node())
}
