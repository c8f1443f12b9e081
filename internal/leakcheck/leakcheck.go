// Package leakcheck holds test helpers that look for resources a test
// leaked in its own process, from /proc/self.
package leakcheck

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ThreadsInOpen counts this process's threads blocked in open(2),
// openat(2) or openat2(2): a file operation stuck on a FIFO holds an OS
// thread there.
func ThreadsInOpen() (int, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
		if err != nil {
			continue // the thread ended
		}
		nr, err := strconv.Atoi(strings.Fields(string(b) + " x")[0])
		if err == nil && (nr == unix.SYS_OPENAT || nr == unix.SYS_OPENAT2 || nr == openSyscall) {
			n++
		}
	}
	return n, nil
}
