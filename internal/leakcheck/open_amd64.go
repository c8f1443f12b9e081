package leakcheck

import "golang.org/x/sys/unix"

const openSyscall = unix.SYS_OPEN
