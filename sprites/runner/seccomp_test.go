package runner

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// TestSeccompProgram runs the filter in x/net/bpf's VM on hand-made
// seccomp_data records (the escape suite makes some of these calls for
// real).
func TestSeccompProgram(t *testing.T) {
	t.Parallel()
	const (
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		enosy = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	for _, goarch := range []string{runtime.GOARCH} {
		t.Run(goarch, func(t *testing.T) {
			t.Parallel()
			prog, err := seccompProgram()
			require.NoError(t, err)
			vm, err := bpf.NewVM(prog)
			require.NoError(t, err)
			info, err := arch.GetInfo(goarch)
			require.NoError(t, err)
			nr := func(name string) int {
				n, ok := info.SyscallNames[name]
				require.True(t, ok, name)
				return n
			}
			run := func(archID uint32, sysno int, arg0 uint64) uint32 {
				// struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]};
				// the VM loads big-endian words, the library reads an
				// argument's low half first (little-endian layout).
				in := make([]byte, 64)
				binary.BigEndian.PutUint32(in[0:], uint32(sysno))
				binary.BigEndian.PutUint32(in[4:], archID)
				binary.BigEndian.PutUint32(in[16:], uint32(arg0))
				binary.BigEndian.PutUint32(in[20:], uint32(arg0>>32))
				ret, err := vm.Run(in)
				require.NoError(t, err)
				return uint32(ret)
			}
			native := uint32(info.ID)
			for _, tt := range []struct {
				call string
				arg0 uint64
				want uint32
			}{
				{"read", 0, allow},
				{"openat", 0, allow},
				{"clone", unix.CLONE_NEWPID | unix.CLONE_NEWNS, allow},
				{"unshare", unix.CLONE_NEWNS, allow},
				{"unshare", unix.CLONE_NEWUSER, eperm},
				{"unshare", unix.CLONE_NEWUSER | unix.CLONE_NEWNS, eperm},
				{"clone", unix.CLONE_NEWUSER, eperm},
				{"clone3", 0, enosy},
				{"keyctl", 0, eperm},
				{"bpf", 0, eperm},
				{"perf_event_open", 0, eperm},
				{"ptrace", 0, eperm},
				{"mount", 0, eperm},
				{"umount2", 0, eperm},
				{"move_mount", 0, eperm},
				{"fsopen", 0, eperm},
				{"setns", 0, eperm},
				{"init_module", 0, eperm},
				{"kexec_load", 0, eperm},
				{"userfaultfd", 0, eperm},
				{"process_vm_readv", 0, eperm},
				{"io_uring_setup", 0, eperm},
				{"reboot", 0, eperm},
			} {
				require.Equal(t, tt.want, run(native, nr(tt.call), tt.arg0), "%s(%#x)", tt.call, tt.arg0)
			}
			// Another architecture's ABI (i386 on amd64, arm on arm64).
			require.Equal(t, enosy, run(uint32(arch.I386.ID), 0, 0))
			require.Equal(t, enosy, run(uint32(arch.ARM.ID), 0, 0))
			if goarch == "amd64" {
				// x32 calls carry bit 30 in the number.
				require.Equal(t, enosy, run(native, 0x40000000|nr("read"), 0))
			}
		})
	}
}
