package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var aodBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "aod-bin-")
	if err != nil {
		panic(err)
	}
	aodBin = filepath.Join(dir, "aod")
	out, err := exec.Command("go", "build", "-o", aodBin, ".").CombinedOutput()
	if err != nil {
		panic("build aod: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cleanEnv is the test process environment without aod's variables, so the
// binary sees a fresh machine.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "AOD_"), name == "DATABASE_URL", name == "SPRITES_API_KEY",
			name == "FIELD_ENCRYPTION_KEY", name == "DJANGO_SECRET_KEY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

var keyRE = regexp.MustCompile(`Bearer (aod_[A-Za-z0-9_-]{43})" (http://[0-9.:]+)/agents`)

func TestFirstRunPrintsWorkingKey(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	cmd := exec.Command(aodBin, "serve")
	cmd.Dir = work
	cmd.Env = cleanEnv("AOD_LISTEN=127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := keyRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var m []string
	select {
	case m = <-found:
	case <-time.After(30 * time.Second):
		t.Fatalf("no key printed; stderr:\n%s", stderr.String())
	}
	key, base := m[1], m[2]
	require.NotContains(t, stderr.String(), key, "the key must not be logged")

	req, err := http.NewRequest(http.MethodGet, base+"/agents", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.JSONEq(t, `{"data":[]}`, string(b))

	// The data dir holds the SQLite file and a private key file.
	st, err := os.Stat(filepath.Join(work, "data", "encryption.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = os.Stat(filepath.Join(work, "data", "aod.db"))
	require.NoError(t, err)

	// SIGTERM shuts down gracefully with exit code 0.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("aod did not stop after SIGTERM")
	}
}

func TestBadConfigIsRejectedAtStart(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, value string }{
		{"AOD_MAX_BODY_BYTES", "huge"},
		{"AOD_SANDBOX", "docker"},
		{"DATABASE_URL", "mysql://nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, aodBin, "serve")
			cmd.Dir = t.TempDir()
			cmd.Env = cleanEnv(tt.name+"="+tt.value, "AOD_LISTEN=127.0.0.1:0")
			out, err := cmd.CombinedOutput()
			var exitErr *exec.ExitError
			require.ErrorAs(t, err, &exitErr)
			require.Equal(t, 1, exitErr.ExitCode())
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			require.Len(t, lines, 1, string(out))
			require.Contains(t, lines[0], tt.name)
		})
	}
}

func TestKeysCommands(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	run := func(args ...string) (string, string, error) {
		cmd := exec.Command(aodBin, args...)
		cmd.Dir = work
		cmd.Env = cleanEnv()
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return o.String(), e.String(), err
	}
	_, _, err := run("users", "create", "alice")
	require.NoError(t, err)
	_, _, err = run("users", "create", "alice")
	require.Error(t, err)
	out, stderr, err := run("keys", "create", "--user", "alice", "--label", "ci", "--expires", "2099-01-01T00:00:00Z")
	require.NoError(t, err, stderr)
	key := strings.TrimSpace(out)
	require.Regexp(t, `^aod_[A-Za-z0-9_-]{43}$`, key)
	out, _, err = run("keys", "revoke", key[:12])
	require.NoError(t, err)
	require.Contains(t, out, "revoked 1")
	_, _, err = run("keys", "revoke", key[:12])
	require.Error(t, err, "revoking twice reports nothing to revoke")
	_, _, err = run("keys", "create", "--user", "bob")
	require.Error(t, err)
	_, _, err = run("keys", "create", "--user", "alice", "--expires", "tomorrow")
	require.Error(t, err)
	out, _, err = run("version")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out, "aod "))
}
