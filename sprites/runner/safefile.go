package runner

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The sandbox controls everything under its directories, so aod's own file
// operations there (WriteFile, ReadFile, Stat, Chmod, called by root) never
// follow a symlink, never open anything but a regular file or a directory,
// and open with O_NONBLOCK: a FIFO planted where aod writes a config file
// must fail the operation at once rather than block an OS thread forever.
// Each path component is opened relative to its parent with O_NOFOLLOW, so
// no symlink anywhere in the path is followed, and the type check is an
// fstat of the opened descriptor, so swapping the file between the check
// and the open does not help. Once a descriptor is known to be a regular
// file of a local filesystem, reading and writing it cannot block
// indefinitely.

// maxReadFile bounds ReadFile.
const maxReadFile = 128 << 20

// errNotRegular is returned for anything but a regular file (or, where
// allowed, a directory); errNotDir for a path component that is not a
// directory (a symlink, say). Both match fs.ErrInvalid: the request, not
// the machine, is at fault.
var (
	errNotRegular = invalidPathError("not a regular file")
	errNotDir     = invalidPathError("is not a directory")
)

type invalidPathError string

func (e invalidPathError) Error() string        { return string(e) }
func (e invalidPathError) Is(target error) bool { return target == fs.ErrInvalid }

// sandboxFile is a resolved path inside a sandbox: its parent directory,
// opened without following symlinks, and the final component.
type sandboxFile struct {
	dir  int // O_PATH descriptor of the parent directory
	leaf string
}

func (f *sandboxFile) close() { unix.Close(f.dir) }

// resolve opens the parent directories of rel (relative to base, a host
// directory backing a sandbox path) one component at a time without
// following symlinks. With create set, missing directories are made with
// mode 0755 and owned by uid/gid.
func resolve(base, rel string, create bool, uid, gid int) (*sandboxFile, error) {
	dir, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(rel, "/")
	for _, c := range parts[:len(parts)-1] {
		next, err := unix.Openat(dir, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(dir, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				if err == nil {
					err = unix.Fchownat(dir, c, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
				}
				if err == nil {
					next, err = unix.Openat(dir, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				}
			}
		}
		unix.Close(dir)
		if err != nil {
			if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				return nil, fmt.Errorf("%s %w", c, errNotDir)
			}
			return nil, err
		}
		dir = next
	}
	return &sandboxFile{dir: dir, leaf: parts[len(parts)-1]}, nil
}

// check refuses anything but a regular file (or a directory with dirOK) and
// regular files with other hard links (which could be a host file).
func check(st *unix.Stat_t, dirOK bool) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if st.Nlink > 1 {
			return fmt.Errorf("%w (it has %d hard links)", errNotRegular, st.Nlink)
		}
		return nil
	case unix.S_IFDIR:
		if dirOK {
			return nil
		}
	}
	return fmt.Errorf("%w (%s)", errNotRegular, typeName(st.Mode))
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "mode " + strconv.FormatUint(uint64(mode), 8)
}

// unixMode converts mode to the bits of chmod(2).
func unixMode(mode fs.FileMode) uint32 {
	m := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		m |= unix.S_ISUID
	}
	if mode&fs.ModeSetgid != 0 {
		m |= unix.S_ISGID
	}
	if mode&fs.ModeSticky != 0 {
		m |= unix.S_ISVTX
	}
	return m
}

// writeFile writes data to the regular file at rel under base, creating it
// and its parent directories (owned by uid/gid).
func writeFile(base, rel string, data []byte, mode fs.FileMode, uid, gid int) error {
	f, err := resolve(base, rel, true, uid, gid)
	if err != nil {
		return err
	}
	defer f.close()
	var st unix.Stat_t
	if err := unix.Fstatat(f.dir, f.leaf, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if err := check(&st, false); err != nil {
			return err
		}
	} else if !errors.Is(err, unix.ENOENT) {
		return err
	}
	fd, err := unix.Openat(f.dir, f.leaf, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, unixMode(mode)&0o777)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EISDIR) {
			return errNotRegular
		}
		return err
	}
	file := os.NewFile(uintptr(fd), f.leaf)
	defer file.Close()
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := check(&st, false); err != nil {
		return err
	}
	if err := file.Truncate(0); err != nil {
		return err
	}
	if _, err := file.Write(data); err != nil {
		return err
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	return unix.Fchmod(fd, unixMode(mode))
}

// openLeaf opens rel under base as an O_PATH descriptor (which never blocks
// and never opens a device) without following a symlink, and checks its
// type.
func openLeaf(base, rel string, dirOK bool) (*os.File, error) {
	f, err := resolve(base, rel, false, 0, 0)
	if err != nil {
		return nil, err
	}
	defer f.close()
	fd, err := unix.Openat(f.dir, f.leaf, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := check(&st, dirOK); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Base(rel)), nil
}

// readFile reads the regular file at rel under base.
func readFile(base, rel string) ([]byte, error) {
	pf, err := openLeaf(base, rel, false)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	// Re-open the checked inode for reading through its descriptor.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(pf.Fd())), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	file := os.NewFile(uintptr(fd), pf.Name())
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, maxReadFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxReadFile {
		return nil, fmt.Errorf("file is larger than %d bytes", maxReadFile)
	}
	return b, nil
}

// statFile describes the regular file or directory at rel under base.
func statFile(base, rel string) (fs.FileInfo, error) {
	pf, err := openLeaf(base, rel, true)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	return pf.Stat()
}

// chmodFile changes the mode of the regular file or directory at rel under
// base.
func chmodFile(base, rel string, mode fs.FileMode) error {
	pf, err := openLeaf(base, rel, true)
	if err != nil {
		return err
	}
	defer pf.Close()
	// chmod through the descriptor's magic link: the checked inode itself.
	return unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(pf.Fd())), unixMode(mode), 0)
}

// readDir describes the entries of the directory at rel under base, sorted
// by name, without following symlinks (the directory itself or its
// entries).
func readDir(base, rel string) ([]fs.FileInfo, error) {
	pf, err := openLeaf(base, rel, true)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	// Re-open the checked inode as a directory; its entries are described
	// relative to that descriptor, so a rename of the path cannot redirect
	// them.
	procPath := "/proc/self/fd/" + strconv.Itoa(int(pf.Fd()))
	fd, err := unix.Open(procPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	dir := os.NewFile(uintptr(fd), "/proc/self/fd/"+strconv.Itoa(fd))
	defer dir.Close()
	ents, err := dir.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	out := make([]fs.FileInfo, 0, len(ents))
	for _, e := range ents {
		fi, err := e.Info() // lstat through the descriptor's path
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, fi)
	}
	slices.SortFunc(out, func(a, b fs.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}
