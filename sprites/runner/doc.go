// Package runner runs sandboxes on this machine: the process runner shared
// by the local backend (package local) and the fake Sprites server (package
// spritestest).
//
// # Layout
//
// Each sandbox is a directory Dir/<name> (0710 root:<sandbox gid>),
// bind-mounted with its overlays at StageDir/<hash of Dir>/<name> for
// bubblewrap:
//
//	uid             the sandbox's host uid
//	binds/<i>       the extra binds (Config.ExtraBinds), bind-mounted
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
// with HOME=/home/sprite, a fixed PATH, a minimal environment, and private
// pid, ipc and uts namespaces. Outside, uid 1000 is the sandbox's own
// unprivileged host uid (see identity.go: one per sandbox from
// Config.UIDBase), never root: files the sandbox creates are owned by that
// uid on the host, host files only root may read stay unreadable, and
// /proc/sys, /proc/sysrq-trigger and /sys cannot be written. The shim starts
// bubblewrap as that uid; bubblewrap's --disable-userns forbids nested user
// namespaces, it sets no_new_privs, the command has no capabilities, and a
// seccomp filter (seccomp.go) makes dangerous system calls fail with EPERM.
// The sandbox's home and workspace, and the directories of /usr/local and
// /opt (two levels deep, through the overlay), belong to the sandbox uid;
// everything else of the host's system directories appears owned by
// "nobody" and read-only. The sandbox gets its own passwd, group, shadow,
// hosts and resolv.conf, and non-world-readable files of the host's /etc
// are hidden as well.
//
// aod's own file operations on sandbox paths (WriteFile, ReadFile, Stat,
// Chmod) follow no symlink and touch nothing but regular files and
// directories, so a FIFO, device node or symlink planted by the sandbox
// fails them at once with "not a regular file" (safefile.go).
//
// # Network
//
//   - NetworkPrivate (the default): each exec gets a new network namespace
//     with lo and tap0, connected to the outside by slirp4netns
//     --disable-host-loopback, so services on the host's loopback are not
//     reachable. Before slirp4netns and bwrap start, the shim installs
//     nftables output rules in the namespace (tables ip and ip6
//     "aod_egress") that reject every connection to the host's own
//     addresses and to the ranges of [egress.Blocked] (private, CGNAT,
//     link-local with 169.254.169.254, loopback, multicast; fc00::/7,
//     fe80::/10, ...), TCP with a reset and the rest with ICMP
//     "administratively prohibited", and accept lo, slirp's DNS
//     (10.0.2.3:53, UDP and TCP) and everything else: the internet. The
//     namespace belongs to the host's user namespace, so nothing inside
//     can change the rules, routes or links.
//   - NetworkHost: the host's network is shared (development and tests).
//   - A deny-all policy (see [sprites.NetworkPolicy.DenyAll]) gives an empty
//     network namespace (only lo), whatever the mode.
//   - Any other policy with rules (an allow-list) gives, whatever the mode,
//     a namespace with only lo and no route out, in which the shim listens
//     on [ProxyAddr] (the socket is made by a thread inside the namespace)
//     and serves an HTTP CONNECT / forwarding and SOCKS5 proxy
//     ([egress.Proxy]) that connects, from the host, only to names the
//     policy allows (exact names, "*.suffix" wildcards, the "defaults"
//     preset; most specific rule wins, unmatched names are denied), never
//     to raw IP addresses, and only to resolved addresses outside the
//     blocked ranges and the host's own (no DNS rebinding). Every exec
//     there gets HTTP_PROXY, HTTPS_PROXY, ALL_PROXY (socks5h), NO_PROXY and
//     their lower-case forms; DNS and every other path are closed. The
//     proxy has a handshake deadline, bounded buffers and a connection cap
//     per exec (one exec, one namespace, one proxy). Config.EgressHosts
//     maps names to test servers for tests.
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
