// Package cluster decides which node owns a session. Every command for a
// session (start, prompt, terminate, live subscription) goes to its owner's
// session actor. A single node owns everything; the memberlist-based
// multi-node implementation plugs in behind the same interface.
package cluster

// Ownership maps a session to the node that runs its actor.
type Ownership interface {
	// Owner returns the owning node's name and whether it is this node.
	Owner(sessionID string) (node string, local bool)
	// Node returns this node's name.
	Node() string
}

// Single is the ownership of a one-node install: this node owns every
// session.
type Single struct {
	// Name is this node's name (for logs and the sessions.owner_node column).
	Name string
}

// Owner implements Ownership.
func (s Single) Owner(string) (string, bool) { return s.Name, true }

// Node implements Ownership.
func (s Single) Node() string { return s.Name }

var _ Ownership = Single{}
