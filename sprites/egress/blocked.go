package egress

import (
	"net"
	"net/netip"
)

// SlirpDNS is slirp4netns's DNS forwarder inside an unrestricted
// sandbox's namespace: the one address of a blocked range a sandbox may
// send to, on port 53 only.
var SlirpDNS = netip.MustParseAddr("10.0.2.3")

// blocked are the ranges no sandbox connects to, whatever its policy.
var blocked = []netip.Prefix{
	// IPv4
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // private, slirp's 10.0.2.2 gateway to the host
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, 169.254.169.254 metadata
	netip.MustParsePrefix("172.16.0.0/12"),  // private
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("192.168.0.0/16"), // private
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
	// IPv6
	netip.MustParsePrefix("::/128"),        // unspecified
	netip.MustParsePrefix("::1/128"),       // loopback
	netip.MustParsePrefix("::ffff:0:0/96"), // IPv4-mapped
	netip.MustParsePrefix("64:ff9b::/96"),  // NAT64 (could embed a private IPv4)
	netip.MustParsePrefix("fc00::/7"),      // unique local
	netip.MustParsePrefix("fe80::/10"),     // link-local
	netip.MustParsePrefix("ff00::/8"),      // multicast
}

// Blocked returns the address ranges no sandbox may connect to, IPv4 and
// IPv6. The host's own addresses ([HostAddrs]) are blocked too.
func Blocked() []netip.Prefix { return append([]netip.Prefix(nil), blocked...) }

// HostAddrs returns every address on this host's interfaces (of the
// calling thread's network namespace).
func HostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// IsBlocked reports whether a is in a blocked range or one of host.
func IsBlocked(a netip.Addr, host []netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range blocked {
		if p.Contains(a) {
			return true
		}
	}
	for _, h := range host {
		if h.Unmap() == a {
			return true
		}
	}
	return false
}
