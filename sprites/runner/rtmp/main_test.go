package rt

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
)

func TestMain(m *testing.M) { runner.MaybeRunShim(); os.Exit(m.Run()) }

func TestX(t *testing.T) {
	r, _ := runner.New(runner.Config{Dir: t.TempDir(), Network: "host"})
	ctx := context.Background()
	if err := r.Create(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	defer r.Delete(ctx, "a")
	p, err := r.Start(ctx, "a", runner.Spec{Argv: []string{"sleep", "301"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("sh", "-c", "ps -eo pid,ppid,pgid,sid,stat,args | grep -E 'sleep 301|bwrap' | grep -v grep | cut -c1-80").CombinedOutput()
	t.Logf("before:\n%s", out)
	p.Kill(15)
	p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error { t.Log(ev); return nil })
	time.Sleep(100 * time.Millisecond)
	out, _ = exec.Command("sh", "-c", "ps -eo pid,ppid,pgid,sid,stat,args | grep -E 'sleep 301|bwrap' | grep -v grep | cut -c1-80").CombinedOutput()
	t.Logf("after:\n%s", out)
}
