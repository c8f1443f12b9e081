// Package sprites defines the sandbox interface that sessions use, whatever
// the backend, and implements it for the Fly.io Sprites service.
//
// Backends:
//   - [Client] talks to the Sprites REST + exec-WebSocket API (or to the fake
//     server in package spritestest, which speaks the same protocol).
//   - package local runs sandboxes on this machine with bubblewrap, sharing
//     the process runner (package runner) with the fake server.
//
// Every call takes a context. Errors are typed: use [errors.Is] with
// [ErrNotFound], [ErrRateLimited], [ErrUnauthorized], [ErrTransportLost], and
// [errors.As] with *[Error] for the HTTP status, code and retry-after.
package sprites

import (
	"context"
	"io/fs"
)

// Backend is one sandbox provider. Sandboxes are addressed by name
// (the session's backend handle, e.g. "aod-0123456789ab").
type Backend interface {
	// Check reports whether the backend can run sandboxes at all (for
	// example the Sprites token is set, or bubblewrap is installed). The error
	// says what is missing and how to fix it.
	Check(ctx context.Context) error
	// Create creates the sandbox. Creating a name that exists fails with an
	// *Error whose Status is 409 (or 400 on Sprites).
	Create(ctx context.Context, name string) (*Info, error)
	// Get returns the sandbox or an error matching ErrNotFound.
	Get(ctx context.Context, name string) (*Info, error)
	// Delete destroys the sandbox and everything in it. A missing sandbox
	// gives an error matching ErrNotFound.
	Delete(ctx context.Context, name string) error
	// WriteFile writes data to the absolute path inside the sandbox with the
	// given mode, creating parent directories.
	WriteFile(ctx context.Context, name, path string, data []byte, mode fs.FileMode) error
	// Chmod changes the mode of an absolute path inside the sandbox.
	Chmod(ctx context.Context, name, path string, mode fs.FileMode) error
	// SetNetworkPolicy replaces the sandbox's egress policy. An empty rule
	// list means unrestricted.
	SetNetworkPolicy(ctx context.Context, name string, policy NetworkPolicy) error
	// Exec starts a command and streams its output. The returned Exec must be
	// closed by the caller. Closing it does not stop the command.
	Exec(ctx context.Context, name string, req ExecRequest) (Exec, error)
	// Attach re-attaches to a running (or finished, while its record lasts)
	// command by id. Output bytes before the given per-stream offsets are
	// skipped, so a caller that stored how many bytes it had delivered
	// receives every byte exactly once.
	Attach(ctx context.Context, name, execID string, from Offsets) (Exec, error)
	// Kill sends a signal ("TERM", "KILL", "INT", ...) to a running command.
	// Killing a command that has already exited is not an error.
	Kill(ctx context.Context, name, execID, signal string) error
}

// Info describes a sandbox.
type Info struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	URL    string `json:"url,omitempty"`
}

// NetworkPolicy is an ordered list of egress rules; the first matching rule
// wins. aod writes allow rules followed by a final {"*", "deny"}.
type NetworkPolicy struct {
	Rules []Rule `json:"rules"`
}

// Rule is one egress rule: Domain ("api.x.com", "*.github.com", "*") with
// Action "allow" or "deny", or an Include of a named preset.
type Rule struct {
	Domain  string `json:"domain,omitempty"`
	Action  string `json:"action,omitempty"`
	Include string `json:"include,omitempty"`
}

// DenyAll reports whether the policy allows nothing: no allow rule and a
// final "*" deny.
func (p NetworkPolicy) DenyAll() bool {
	if len(p.Rules) == 0 {
		return false
	}
	for _, r := range p.Rules {
		if r.Action == "allow" || r.Include != "" {
			return false
		}
	}
	last := p.Rules[len(p.Rules)-1]
	return last.Domain == "*" && last.Action == "deny"
}

// ExecRequest is a command to run inside a sandbox. There is no shell: wrap
// with "bash", "-lc", "..." when one is needed.
type ExecRequest struct {
	Argv []string
	// Dir is the working directory; empty means /home/sprite.
	Dir string
	// Stdin, when non-nil, is written to the command's standard input,
	// followed by EOF. When nil the command gets EOF at once.
	Stdin []byte
}

// Stream names an output stream.
type Stream uint8

// Output streams, numbered as in the Sprites exec framing.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return "unknown"
}

// Offsets counts the bytes of each stream already delivered.
type Offsets struct {
	Stdout int64
	Stderr int64
}

// Event is one thing that happened to a running command: a chunk of output,
// or its exit.
type Event struct {
	// Stream and Data are set for output events.
	Stream Stream
	Data   []byte
	// Exited is true for the last event; ExitCode then holds the code
	// (128+N for death by signal N).
	Exited   bool
	ExitCode int
}

// Exec is a running (or re-attached) command.
type Exec interface {
	// ID identifies the command for Attach and Kill.
	ID() string
	// Next blocks until the next event. Output arrives in order per stream,
	// as soon as the command writes it. After the exit event Next returns
	// io.EOF. If the connection is lost and cannot be re-established, Next
	// returns an error matching ErrTransportLost; the command may still be
	// running and can be re-attached with Attach and Offsets().
	Next(ctx context.Context) (Event, error)
	// Offsets returns the bytes delivered so far per stream.
	Offsets() Offsets
	// Close releases the stream. It does not stop the command.
	Close() error
}
