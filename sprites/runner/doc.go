// Package runner runs sandboxes on this machine: the process runner shared
// by the local backend (package local) and the fake Sprites server (package
// spritestest).
//
// # Layout
//
// Each sandbox is a directory Dir/<name>:
//
//	home/           → /home/sprite
//	tmp/            → /tmp
//	workspace/      → /workspace
//	overlay/<d>/    upper and work dirs of the overlay over the host's /<d>
//	root/<d>/       the merged overlay mounted for /usr, /etc, /opt
//	policy.json     the network policy
//	execs/<id>/     one spool directory per exec
//	disk.img        the sandbox's disk (with limits on), loop-mounted on
//	disk/           which holds home, tmp, workspace and overlay, each
//	                bind-mounted onto the directory of the same name above
//
// The host's /usr, /etc and /opt appear inside through a per-sandbox kernel
// overlayfs (mounted by the runner, which must be root), so writes land in the
// sandbox's upper dir only. /bin, /sbin, /lib and /lib64 are symlinks on
// merged-usr systems and are recreated as symlinks. Nothing else of the host
// is visible: not /root, not other homes, not /srv, /work, the data
// directory or the host's /tmp.
//
// Commands run under bubblewrap as uid 1000 ("sprite") in a user namespace,
// with HOME=/home/sprite, a fixed PATH, and private pid, ipc and uts
// namespaces. Inside, uid 1000 is the runner's own uid outside (root), so
// the host's system files, and the files the runner writes for the sandbox,
// appear as owned by sprite and writable through the overlay. Because of
// that, files under the host's /etc that are not world-readable (shadow,
// private keys) are hidden in each sandbox's /etc overlay, and the sandbox
// gets its own passwd, group, shadow, hosts and resolv.conf.
//
// # Network
//
//   - NetworkPrivate (the default): each exec gets a new network namespace
//     with lo and tap0, connected to the outside by slirp4netns
//     --disable-host-loopback, so services on the host's loopback are not
//     reachable. The shim configures the namespace before the command
//     starts.
//   - NetworkHost: the host's network is shared (development and tests).
//   - A deny-all policy (see [sprites.NetworkPolicy.DenyAll]) gives an empty
//     network namespace (only lo), whatever the mode. Other policies are
//     recorded (Policy returns them) but not enforced.
//
// # Resource limits
//
// Unless Config.Limits.Off, each sandbox has a cgroup, aod/<key>-<name>
// under the root of each hierarchy (cgroup v2 when the unified hierarchy
// has the memory and pids controllers, else the v1 memory, pids and cpu
// hierarchies), with its memory, swap, process and CPU limits; the key is
// derived from Dir, so a new Runner finds the cgroups of existing
// sandboxes. The shim places bwrap in it as it starts (v2: CLONE_INTO_CGROUP;
// v1: the starting thread joins the cgroups and leaves again), so every
// process of the sandbox is born in it while the shim and slirp4netns stay
// outside. Its disk is a sparse ext4 image written from a per-size template
// the Runner keeps in memory (the data extents of its first mkfs), and
// RLIMIT_NOFILE is set in the shim before bwrap.
// When the memory limit killed a process or the process limit refused a
// fork while an exec ran, the shim appends a line saying so to the exec's
// stderr before it records the exit. Delete kills what is left in the
// cgroup, removes it, and unmounts the disk (freeing its loop device).
//
// # Execs outlive their owner
//
// Start launches a shim (Config.ShimArgv, by default this executable with
// AOD_EXEC_SHIM=1 in its environment) in its own session. The shim starts
// bubblewrap with the spool files as the command's stdout and stderr, so the
// command writes straight into them, and writes the exit code to
// execs/<id>/exit when the command ends (128+N for death by signal N).
// bubblewrap dies with the shim, never with the owner. The shim holds a lock
// on execs/<id>/lock while it runs, records the command's process group in
// execs/<id>/pid for Kill, and Delete kills every exec of the sandbox and
// waits for their shims before unmounting.
//
// Watch follows the spool files with inotify, so a chunk reaches fn within
// a fraction of a millisecond of being written. Killing the owner (even with SIGKILL) does not stop
// the command; a new Runner on the same Dir re-opens it with Open and reads
// its output from any offset with Watch.
//
// Every program that starts execs must call [MaybeRunShim] first thing in
// main, and every test package that starts execs must call it first in
// TestMain:
//
//	func TestMain(m *testing.M) {
//		runner.MaybeRunShim()
//		os.Exit(m.Run())
//	}
package runner
