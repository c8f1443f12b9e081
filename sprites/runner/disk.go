package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The disk limit: each sandbox gets a sparse ext4 image, Dir/<name>/disk.img,
// loop-mounted on Dir/<name>/disk. Its home, tmp, workspace and overlay
// directories (the overlays' upper dirs) live there and are bind-mounted
// onto Dir/<name>/<dir>, so every other part of the runner sees the usual
// layout. The exec spool files (execs/) stay on the host's disk.
const (
	diskImage = "disk.img"
	diskMount = "disk"
)

// diskDirs are the sandbox directories kept on its disk image.
var diskDirs = []string{"home", "tmp", "workspace", "overlay"}

// Loop device flags (linux/loop.h).
const (
	loFlagsAutoclear = 4  // detach when the last user (the mount) goes
	loFlagsDirectIO  = 16 // no second copy in the host's page cache
)

// mkfsTimeout bounds mkfs.ext4.
const mkfsTimeout = 30 * time.Second

// loopAttempts bounds the retries when another process takes the free loop
// device between LOOP_CTL_GET_FREE and LOOP_CONFIGURE.
const loopAttempts = 20

// ensureDisk creates the sandbox's disk image (with create set) and mounts
// it with the bind mounts over it unless they are mounted (after a reboot
// they are not). Without create, a sandbox without an image is left alone.
func (r *Runner) ensureDisk(ctx context.Context, d string, create bool) error {
	img := filepath.Join(d, diskImage)
	if !create {
		if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	mnt := filepath.Join(d, diskMount)
	if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	mounted, err := isMountPoint(mnt)
	if err != nil {
		return err
	}
	if !mounted {
		if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
			if err := r.makeDisk(ctx, img, r.limits.Disk); err != nil {
				return err
			}
		}
		if err := mountImage(img, mnt); err != nil {
			return err
		}
	}
	for _, sub := range diskDirs {
		src, dst := filepath.Join(mnt, sub), filepath.Join(d, sub)
		for _, p := range []string{src, dst} {
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		}
		mounted, err := isMountPoint(dst)
		if err != nil {
			return err
		}
		if mounted {
			continue
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, dst, err)
		}
	}
	return nil
}

// diskTemplate is an empty filesystem image held in memory as its data
// extents (a few MiB of metadata for 10 GiB): writing them into a new sparse
// file is several times faster than mkfs.
type diskTemplate struct {
	size    int64
	extents []extent
}

type extent struct {
	off  int64
	data []byte
}

// makeDisk creates the image img of size bytes: from the runner's template
// for that size, made (by mkfs, into img) and kept the first time.
func (r *Runner) makeDisk(ctx context.Context, img string, size int64) error {
	r.tmplMu.Lock()
	t := r.templates[size]
	r.tmplMu.Unlock()
	if t != nil {
		if err := t.write(img); err != nil {
			_ = os.Remove(img)
			return fmt.Errorf("write disk image: %w", err)
		}
		return nil
	}
	if err := makeImage(ctx, img, size); err != nil {
		_ = os.Remove(img)
		return err
	}
	t, err := readTemplate(img)
	if err != nil {
		r.logger.Warn("runner: keep disk template", "err", err)
		return nil // img is good; the next sandbox runs mkfs again
	}
	r.tmplMu.Lock()
	defer r.tmplMu.Unlock()
	if r.templates == nil {
		r.templates = map[int64]*diskTemplate{}
	}
	r.templates[size] = t
	return nil
}

// readTemplate reads the data extents of a fresh image.
func readTemplate(img string) (*diskTemplate, error) {
	f, err := os.Open(img)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	t := &diskTemplate{size: fi.Size()}
	var total int64
	fd := int(f.Fd())
	for off := int64(0); off < t.size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return nil, fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole: %w", err)
		}
		if total += hole - data; total > maxTemplate {
			return nil, fmt.Errorf("disk template over %d bytes", maxTemplate)
		}
		b := make([]byte, hole-data)
		if _, err := f.ReadAt(b, data); err != nil {
			return nil, err
		}
		t.extents = append(t.extents, extent{data, b})
		off = hole
	}
	return t, nil
}

// maxTemplate bounds the memory a disk template may take.
const maxTemplate = 64 << 20

// write creates img as a sparse file with the template's extents.
func (t *diskTemplate) write(img string) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(t.size)
	for _, e := range t.extents {
		if err != nil {
			break
		}
		_, err = f.WriteAt(e.data, e.off)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// makeImage creates a sparse file of size bytes with an ext4 filesystem
// without a journal (the sandbox is disposable; no journal also means no
// journal's worth of host disk up front).
func makeImage(ctx context.Context, img string, size int64) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("size disk image: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, mkfsTimeout)
	defer cancel()
	mkfs, err := mkfsPath(exec.LookPath)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-b", "4096", "-m", "0",
		"-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1", img)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", img, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mkfsPath finds mkfs.ext4 on PATH or in the sbin directories (often not
// on a service's PATH).
func mkfsPath(lookPath func(string) (string, error)) (string, error) {
	if p, err := lookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mkfs.ext4 is not installed: apt-get install e2fsprogs")
}

// mountImage attaches img to a free loop device (detached automatically
// when unmounted) and mounts it on mnt.
func mountImage(img, mnt string) error {
	backing, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer backing.Close()
	dev, err := attachLoop(backing)
	if err != nil {
		return fmt.Errorf("attach %s to a loop device: %w", img, err)
	}
	// With autoclear the device detaches once this file and the mount are
	// gone; if the mount fails, closing it frees the device.
	defer dev.Close()
	// noinit_itable: the image is sparse and fresh, its inode tables read
	// as zeroes; zeroing them in the background would only fill the host's
	// disk.
	if err := unix.Mount(dev.Name(), mnt, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, "noinit_itable"); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev.Name(), img, mnt, err)
	}
	return nil
}

// attachLoop binds backing to a free loop device and returns the device.
func attachLoop(backing *os.File) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{
		Fd:   uint32(backing.Fd()),
		Size: 4096, // logical block size, the filesystem's block size
		Info: unix.LoopInfo64{Flags: loFlagsAutoclear | loFlagsDirectIO},
	}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], backing.Name())
	var lastErr error
	for range loopAttempts {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := os.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			// No devtmpfs node (yet): make one.
			if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("create %s: %w", path, err)
			}
			dev, err = os.OpenFile(path, os.O_RDWR, 0)
		}
		if err != nil {
			return nil, err
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("configure %s: %w", path, err)
		}
		lastErr = err // taken by someone else meanwhile: try the next
	}
	return nil, fmt.Errorf("no loop device after %d attempts: %w", loopAttempts, lastErr)
}

// unmountDisk unmounts the bind mounts and the disk image (which detaches
// its loop device), also with limits off. Nothing mounted is not an error.
func (r *Runner) unmountDisk(d string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	mnt := filepath.Join(d, diskMount)
	loop := -1 // the loop device's number, when the disk is mounted
	var st unix.Stat_t
	if mounted, _ := isMountPoint(mnt); mounted && unix.Stat(mnt, &st) == nil && unix.Major(st.Dev) == loopMajor {
		loop = int(unix.Minor(st.Dev))
	}
	var targets []string
	for _, sub := range diskDirs {
		targets = append(targets, filepath.Join(d, sub))
	}
	for _, p := range append(targets, mnt) {
		if err := unmountAll(p); err != nil {
			return err
		}
	}
	if loop >= 0 {
		return waitLoopDetached(loop, filepath.Join(d, diskImage))
	}
	return nil
}

// loopMajor is the block major number of loop devices.
const loopMajor = 7

// loopDetachBudget bounds the wait for a loop device to detach after its
// filesystem is unmounted (the kernel detaches it from a work queue).
const loopDetachBudget = 5 * time.Second

// waitLoopDetached waits until loop device n no longer has img as its
// backing file, so Delete returns with the device free.
func waitLoopDetached(n int, img string) error {
	f := fmt.Sprintf("/sys/block/loop%d/loop/backing_file", n)
	deadline := time.Now().Add(loopDetachBudget)
	for {
		b, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), img) {
			return nil // detached (the file is gone) or reused for another image
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop device /dev/loop%d (%s) still attached %s after unmounting it", n, img, loopDetachBudget)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// unmountAll unmounts whatever is mounted on p, retrying while it is busy
// (processes of a killed sandbox still exiting) and detaching lazily at the
// end of the budget.
func unmountAll(p string) error {
	for attempt := 0; ; attempt++ {
		mounted, err := isMountPoint(p)
		if errors.Is(err, os.ErrNotExist) || (err == nil && !mounted) {
			return nil
		}
		if err != nil {
			return err
		}
		flags := 0
		if attempt >= 20 {
			flags = unix.MNT_DETACH
		}
		err = unix.Unmount(p, flags)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL): // EINVAL: not mounted
		case errors.Is(err, unix.EBUSY) && attempt < 40:
			time.Sleep(10 * time.Millisecond)
		default:
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
}
