//go:build !amd64

package leakcheck

import "golang.org/x/sys/unix"

const openSyscall = unix.SYS_OPENAT
