package runner

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The sandbox's seccomp filter, in the spirit of Docker's default profile
// but as a deny-list: everything is allowed except the calls below, which
// fail with EPERM (never a kill, so programs fail cleanly). bubblewrap
// loads it (--seccomp) right before it executes the command, after its own
// mounts, so the command and all its descendants run under it. Calls of
// another architecture's ABI (i386 on amd64, x32) fail with ENOSYS.

// deniedSyscalls fail with EPERM. Names the architecture lacks are skipped.
var deniedSyscalls = []string{
	// Kernel keyrings, BPF, perf: kernel attack surface, not namespaced.
	"keyctl", "add_key", "request_key", "bpf", "perf_event_open",
	// Kernel modules and kexec.
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"create_module", "get_kernel_syms", "query_module",
	// Mounts (bubblewrap's own are done before the filter is loaded).
	"mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree",
	"fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "chroot",
	// Namespaces: joining any; creating user namespaces (see below).
	"setns",
	// Other processes' memory, debugging.
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
	// Historical privilege-escalation helpers.
	"userfaultfd", "open_by_handle_at",
	// io_uring bypasses this filter for the operations it performs.
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	// Host administration.
	"swapon", "swapoff", "reboot", "settimeofday", "clock_settime", "clock_adjtime",
	"stime", "acct", "quotactl", "quotactl_fd", "lookup_dcookie",
	"iopl", "ioperm", "syslog", "vhangup", "nfsservctl", "uselib", "_sysctl",
	"fanotify_init",
}

// newUserNamespace is CLONE_NEWUSER: unshare and clone with it fail with
// EPERM (bubblewrap's --disable-userns stops them too). clone3 passes its
// flags in memory, where a classic BPF filter cannot look, so it fails
// with ENOSYS and C libraries fall back to clone.
const newUserNamespace = unix.CLONE_NEWUSER

// seccompProgram assembles the filter for this architecture (the library
// assembles for the running one only: amd64 and arm64 among others).
func seccompProgram() ([]bpf.Instruction, error) {
	info, err := arch.GetInfo(runtime.GOARCH)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	var names []string
	for _, n := range deniedSyscalls {
		if _, ok := info.SyscallNames[n]; ok {
			names = append(names, n)
		}
	}
	userns := seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: newUserNamespace}}
	groups := []seccomp.SyscallGroup{
		{Names: names, Action: seccomp.ActionErrno},
		{NamesWithCondtions: []seccomp.NameWithConditions{
			{Name: "unshare", Conditions: userns},
			{Name: "clone", Conditions: userns},
		}, Action: seccomp.ActionErrno},
	}
	if _, ok := info.SyscallNames["clone3"]; ok {
		groups = append(groups, seccomp.SyscallGroup{Names: []string{"clone3"}, Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS)})
	}
	policy := seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: groups}
	prog, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	// The library's program allows every call of a foreign architecture
	// (its default action); refuse them first.
	const archOffset = 4 // struct seccomp_data: int nr; __u32 arch; ...
	guard := []bpf.Instruction{
		bpf.LoadAbsolute{Off: archOffset, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)},
	}
	prog = append(guard, prog...)
	if len(prog) > 4096 { // BPF_MAXINSNS
		return nil, fmt.Errorf("seccomp: program too long (%d instructions)", len(prog))
	}
	return prog, nil
}

// seccompFile returns the filter as struct sock_filter records in a memfd
// positioned at its start, for bwrap --seccomp.
func seccompFile() (*os.File, error) {
	prog, err := seccompProgram()
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	buf := make([]byte, 0, 8*len(raw))
	for _, in := range raw {
		buf = binary.NativeEndian.AppendUint16(buf, in.Op)
		buf = append(buf, in.Jt, in.Jf)
		buf = binary.NativeEndian.AppendUint32(buf, in.K)
	}
	fd, err := unix.MemfdCreate("aod-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	f := os.NewFile(uintptr(fd), "aod-seccomp")
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	return f, nil
}
