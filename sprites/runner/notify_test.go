package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDirNotifier(t *testing.T) {
	t.Parallel()
	// More directories than the usual per-user inotify instance limit (128):
	// one instance serves them all.
	const dirs = 300
	base := t.TempDir()
	type sub struct {
		dir  string
		ch   <-chan struct{}
		stop func()
	}
	var subs []sub
	for i := range dirs {
		dir := filepath.Join(base, fmt.Sprintf("d%d", i))
		require.NoError(t, os.Mkdir(dir, 0o700))
		ch, stop, err := notifier.subscribe(dir)
		require.NoError(t, err)
		t.Cleanup(stop)
		subs = append(subs, sub{dir, ch, stop})
	}
	// Two subscriptions to one directory both wake.
	ch2, stop2, err := notifier.subscribe(subs[0].dir)
	require.NoError(t, err)
	defer stop2()

	for _, s := range subs {
		require.NoError(t, os.WriteFile(filepath.Join(s.dir, "f"), []byte("x"), 0o600))
	}
	timeout := time.After(testTimeout)
	for _, ch := range []<-chan struct{}{subs[0].ch, ch2} {
		select {
		case <-ch:
		case <-timeout:
			t.Fatal("no wake-up")
		}
	}
	for _, s := range subs[1:] {
		select {
		case <-s.ch:
		case <-timeout:
			t.Fatalf("no wake-up for %s", s.dir)
		}
		s.stop()
		s.stop() // idempotent
	}

	// Removing a watched directory wakes its watchers.
	stop2()
	require.NoError(t, os.RemoveAll(subs[0].dir))
	select {
	case <-subs[0].ch:
	case <-timeout:
		t.Fatal("no wake-up on removal")
	}
}
