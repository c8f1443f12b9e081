package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// systemDirs are the host directories that appear inside every sandbox,
// either through an overlay (directories) or as symlinks (merged /usr).
var systemDirs = []string{"usr", "bin", "sbin", "lib", "lib64", "etc", "opt"}

type hostLayout struct {
	overlays []string          // directories to overlay, e.g. "usr"
	symlinks map[string]string // name → link target, e.g. "bin" → "usr/bin"
}

var hostLayoutOnce = sync.OnceValue(func() hostLayout {
	l := hostLayout{symlinks: map[string]string{}}
	for _, d := range systemDirs {
		fi, err := os.Lstat("/" + d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink("/" + d); err == nil {
				l.symlinks[d] = target
			}
		case fi.IsDir():
			l.overlays = append(l.overlays, d)
		}
	}
	return l
})

// overlayDirs lists the host directories overlaid into every sandbox.
func overlayDirs() []string { return hostLayoutOnce().overlays }

// hostSymlinks maps the host's top-level system symlinks to their targets.
func hostSymlinks() map[string]string { return hostLayoutOnce().symlinks }

func hostDirIsDir(d string) bool {
	for _, o := range overlayDirs() {
		if o == d {
			return true
		}
	}
	return false
}

// mountOverlays mounts an overlay over each host system directory at
// d/root/<dir>, unless it is already mounted.
func (r *Runner) mountOverlays(d string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sd := range overlayDirs() {
		upper := filepath.Join(d, "overlay", sd, "upper")
		work := filepath.Join(d, "overlay", sd, "work")
		merged := filepath.Join(d, "root", sd)
		for _, p := range []string{upper, work, merged} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		}
		mounted, err := isMountPoint(merged)
		if err != nil {
			return err
		}
		if mounted {
			continue
		}
		opts := fmt.Sprintf("lowerdir=/%s,upperdir=%s,workdir=%s", sd, upper, work)
		if err := unix.Mount("overlay", merged, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount overlay on %s (%s): %w", merged, opts, err)
		}
	}
	return nil
}

// unmountOverlays unmounts the sandbox's overlays.
func (r *Runner) unmountOverlays(d string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sd := range overlayDirs() {
		merged := filepath.Join(d, "root", sd)
		for attempt := 0; ; attempt++ {
			mounted, err := isMountPoint(merged)
			if errors.Is(err, os.ErrNotExist) || (err == nil && !mounted) {
				break
			}
			if err != nil {
				return err
			}
			flags := 0
			if attempt >= 20 {
				flags = unix.MNT_DETACH
			}
			err = unix.Unmount(merged, flags)
			switch {
			case err == nil, errors.Is(err, unix.EINVAL): // EINVAL: not mounted
			case errors.Is(err, unix.EBUSY) && attempt < 40:
				time.Sleep(10 * time.Millisecond)
			default:
				return fmt.Errorf("unmount %s: %w", merged, err)
			}
		}
	}
	return nil
}

// isMountPoint reports whether p is on another filesystem than its parent.
func isMountPoint(p string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, os.ErrNotExist
		}
		return false, fmt.Errorf("stat %s: %w", p, err)
	}
	if err := unix.Lstat(filepath.Dir(p), &parent); err != nil {
		return false, fmt.Errorf("stat %s: %w", filepath.Dir(p), err)
	}
	return st.Dev != parent.Dev, nil
}
