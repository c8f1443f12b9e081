package seal

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	s, err := New("current-key")
	require.NoError(t, err)
	for _, pt := range []string{"", "secret", strings.Repeat("x", 1<<16), "caf\u00e9 \U0001F600"} {
		v, err := s.Seal([]byte(pt))
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(v, "aod1:"+s.KeyID()+":"))
		if pt != "" {
			require.NotContains(t, v, pt)
		}
		got, err := s.Open(v)
		require.NoError(t, err)
		require.Equal(t, pt, string(got))
	}
	require.NoError(t, s.Check())
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldS, err := New("old-key")
	require.NoError(t, err)
	v, err := oldS.Seal([]byte("tok"))
	require.NoError(t, err)

	rotated, err := New("new-key", "unrelated", "old-key")
	require.NoError(t, err)
	got, err := rotated.Open(v)
	require.NoError(t, err)
	require.Equal(t, "tok", string(got))

	fresh, err := New("new-key")
	require.NoError(t, err)
	_, err = fresh.Open(v)
	require.ErrorIs(t, err, ErrUnknownKey)
}

func TestOpenRejectsBadInput(t *testing.T) {
	t.Parallel()
	s, err := New("k")
	require.NoError(t, err)
	v, err := s.Seal([]byte("hello"))
	require.NoError(t, err)
	tampered := v[:len(v)-2] + "AA"
	tests := map[string]string{
		"plain":       "hello",
		"no payload":  "aod1:abcd",
		"bad base64":  "aod1:" + s.KeyID() + ":!!!",
		"short":       "aod1:" + s.KeyID() + ":AA",
		"tampered":    tampered,
		"unknown key": "aod1:00000000:AAAA",
	}
	for name, in := range tests {
		_, err := s.Open(in)
		require.Error(t, err, name)
	}
	_, err = New("")
	require.Error(t, err)
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", "encryption.key")
	m1, created, err := LoadOrCreateKeyFile(path)
	require.NoError(t, err)
	require.True(t, created)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	m2, created, err := LoadOrCreateKeyFile(path)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, m1, m2)
}

// TestLoadOrCreateKeyFileConcurrent (issue 9 defect 11): processes starting
// at once on an empty data dir agree on one key; none reads a half-written
// (empty) key file, and exactly one reports that it created the key.
func TestLoadOrCreateKeyFileConcurrent(t *testing.T) {
	t.Parallel()
	for round := range 30 {
		path := filepath.Join(t.TempDir(), "data", "encryption.key")
		const n = 16
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			keys    [n]string
			created [n]bool
			errs    [n]error
		)
		for i := range n {
			wg.Go(func() {
				<-start
				keys[i], created[i], errs[i] = LoadOrCreateKeyFile(path)
			})
		}
		close(start)
		wg.Wait()
		creators := 0
		for i := range n {
			require.NoError(t, errs[i], "round %d", round)
			require.Equal(t, keys[0], keys[i], "round %d: every start sees the same key", round)
			if created[i] {
				creators++
			}
		}
		require.Equal(t, 1, creators, "round %d", round)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, keys[0]+"\n", string(b))
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		left, err := os.ReadDir(filepath.Dir(path))
		require.NoError(t, err)
		require.Len(t, left, 1, "no temporary files are left behind")
	}
}
