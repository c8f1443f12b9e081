//go:build !amd64

package runner

import "golang.org/x/sys/unix"

const openSyscall = unix.SYS_OPENAT
