package runner

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/egress"
)

// networkProxy is the exec network of a sandbox with an allow-list: a
// namespace with only lo, and the egress proxy listening on it.
const networkProxy = "proxy"

// ProxyAddr is where the allow-list proxy listens inside a sandbox whose
// policy has allow rules; the proxy variables of every exec there point
// to it.
const ProxyAddr = "127.0.0.1:3128"

// egressTable names the nftables tables (ip and ip6) that filter an
// unrestricted exec's egress.
const egressTable = "aod_egress"

// proxySpec is what the shim needs to serve the allow-list proxy.
type proxySpec struct {
	Rules []sprites.Rule `json:"rules"`
	// Override maps names to test servers (Config.EgressHosts).
	Override map[string]string `json:"override,omitempty"`
}

// proxyEnv is the environment that points a sandbox's programs at the
// allow-list proxy.
func proxyEnv() []string {
	httpProxy := "http://" + ProxyAddr
	socks := "socks5h://" + ProxyAddr
	noProxy := "localhost,127.0.0.1,::1"
	return []string{
		"HTTP_PROXY=" + httpProxy, "HTTPS_PROXY=" + httpProxy, "ALL_PROXY=" + socks, "NO_PROXY=" + noProxy,
		"http_proxy=" + httpProxy, "https_proxy=" + httpProxy, "all_proxy=" + socks, "no_proxy=" + noProxy,
	}
}

// netSetup says how the shim prepares an exec's network namespace.
type netSetup struct {
	// newNet makes a new network namespace (with lo up) for the command.
	newNet bool
	// slirp connects it to the outside with slirp4netns.
	slirp bool
	// inside runs on the thread that is in the new namespace, before
	// slirp4netns and bwrap start.
	inside func(netns *os.File) error
	// stop runs once the command has ended.
	stop func()
}

// shimNetwork returns the network setup of the exec described by spec:
// an unrestricted private network gets the egress filter, an allow-list
// gets the proxy. It runs in the shim, in the host's network namespace.
func shimNetwork(spec shimSpec) (netSetup, error) {
	switch {
	case spec.Proxy != nil:
		host, err := egress.HostAddrs()
		if err != nil {
			return netSetup{}, fmt.Errorf("list host addresses: %w", err)
		}
		m := egress.NewMatcher(sprites.NetworkPolicy{Rules: spec.Proxy.Rules})
		logger := slog.New(slog.NewTextHandler(os.Stderr, nil)) // shim.log
		p := egress.NewProxy(egress.ProxyConfig{
			Allow:     m.Allowed,
			HostAddrs: host,
			Override:  spec.Proxy.Override,
			Logger:    logger,
		})
		return netSetup{
			newNet: true,
			inside: func(*os.File) error {
				// The socket belongs to the namespace of the thread that
				// makes it: the sandbox's. Connections out are made by
				// other threads, in the host's.
				ln, err := net.Listen("tcp", ProxyAddr)
				if err != nil {
					return fmt.Errorf("egress proxy: listen inside the sandbox: %w", err)
				}
				go func() {
					if err := p.Serve(ln); err != nil {
						logger.Error("egress proxy stopped: the sandbox has no network now", "err", err)
					}
				}()
				return nil
			},
			stop: func() { _ = p.Close() },
		}, nil
	case spec.Slirp:
		host, err := egress.HostAddrs()
		if err != nil {
			return netSetup{}, fmt.Errorf("list host addresses: %w", err)
		}
		return netSetup{
			newNet: true,
			slirp:  true,
			inside: func(netns *os.File) error { return installEgressFilter(netns, host) },
		}, nil
	}
	return netSetup{}, nil
}

// installEgressFilter installs, in netns, output rules that let traffic
// out on lo and to slirp's DNS (10.0.2.3, port 53) and reject everything
// to egress.Blocked and to the host's own addresses, each with a counter
// and the range as its comment. Everything else (the internet) is
// accepted. The namespace belongs to the host's user namespace, so the
// sandbox, whose capabilities are in its own, cannot change the rules.
func installEgressFilter(netns *os.File, host []netip.Addr) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(netns.Fd())))
	if err != nil {
		return fmt.Errorf("egress filter: %w", err)
	}
	accept := policyAccept()
	for _, fam := range []struct {
		family  nftables.TableFamily
		v4      bool
		reject  *expr.Reject
		daddrAt uint32
	}{
		{nftables.TableFamilyIPv4, true, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 13 /* ICMP_PKT_FILTERED */}, 16},
		{nftables.TableFamilyIPv6, false, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 1 /* ICMPV6_ADM_PROHIBITED */}, 24},
	} {
		t := c.AddTable(&nftables.Table{Name: egressTable, Family: fam.family})
		ch := c.AddChain(&nftables.Chain{
			Name: "output", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		})
		add := func(comment string, exprs ...expr.Any) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
		}
		add("lo", &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")},
			&expr.Verdict{Kind: expr.VerdictAccept})
		if fam.v4 {
			for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
				add("slirp dns",
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrAt, Len: 4},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: egress.SlirpDNS.AsSlice()},
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 53}},
					&expr.Counter{},
					&expr.Verdict{Kind: expr.VerdictAccept})
			}
		}
		prefixes := egress.Blocked()
		for _, a := range host {
			prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
		for _, p := range prefixes {
			if p.Addr().Is4() != fam.v4 {
				continue
			}
			n := uint32(p.Addr().BitLen() / 8)
			match := []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrAt, Len: n},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: prefixMask(p), Xor: make([]byte, n)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
			}
			// TCP gets a reset, so connect fails at once (ECONNREFUSED);
			// everything else an ICMP "administratively prohibited".
			add(p.String(), append(slices.Clone(match),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Counter{},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})...)
			add(p.String(), append(match, &expr.Counter{}, fam.reject)...)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("egress filter: install rules: %w", err)
	}
	return nil
}

func policyAccept() nftables.ChainPolicy { return nftables.ChainPolicyAccept }

// ifname is an interface name as nftables compares it: NUL-padded to
// IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// prefixMask is p's network mask, as many bytes as its address.
func prefixMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen()
	m := make([]byte, n/8)
	for i := range p.Bits() {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}
