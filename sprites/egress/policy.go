// Package egress decides what a local sandbox may connect to: the address
// ranges no sandbox reaches (the host itself, private, link-local,
// loopback, multicast), the matching of a Sprites-style domain policy, and
// the HTTP CONNECT + SOCKS5 proxy through which a sandbox with an
// allow-list reaches the allowed names and nothing else.
//
// Package runner applies it: unrestricted sandboxes get nftables rules
// built from [Blocked] in their network namespace; sandboxes with an
// allow-list get no route out at all, only a [Proxy] listening on their
// loopback.
package egress

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/aodhq/aod/sprites"
)

// DefaultsInclude is the one preset a policy may include:
// {"include": "defaults"} allows [DefaultHosts].
const DefaultsInclude = "defaults"

// DefaultHosts are the names {"include": "defaults"} allows, after the
// Sprites preset: GitHub, the npm registry, PyPI, Docker Hub and the major
// AI APIs.
var DefaultHosts = []string{
	"github.com", "*.github.com", "*.githubusercontent.com", "codeload.github.com",
	"registry.npmjs.org", "*.npmjs.org", "registry.yarnpkg.com",
	"pypi.org", "files.pythonhosted.org",
	"registry-1.docker.io", "auth.docker.io", "production.cloudflare.docker.com", "*.docker.io",
	"api.anthropic.com", "*.anthropic.com", "api.openai.com", "*.openai.com",
	"generativelanguage.googleapis.com", "*.googleapis.com",
}

var domainRE = regexp.MustCompile(`^(\*|(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)$`)

// Validate reports the first rule the local backend cannot apply: a
// domain that is not a host name, "*.name" or "*"; an action other than
// allow or deny; an include other than [DefaultsInclude].
func Validate(p sprites.NetworkPolicy) error {
	for i, r := range p.Rules {
		switch {
		case r.Include != "":
			if r.Domain != "" || r.Action != "" {
				return fmt.Errorf("rule %d: include cannot be combined with domain or action", i)
			}
			if r.Include != DefaultsInclude {
				return fmt.Errorf("rule %d: unknown include %q (known: %q)", i, r.Include, DefaultsInclude)
			}
		case !domainRE.MatchString(strings.ToLower(r.Domain)):
			return fmt.Errorf("rule %d: invalid domain %q", i, r.Domain)
		case r.Action != "allow" && r.Action != "deny":
			return fmt.Errorf("rule %d: action must be allow or deny, not %q", i, r.Action)
		}
	}
	return nil
}

// Matcher answers whether a policy allows a host name. The zero value
// allows nothing.
type Matcher struct {
	rules []matchRule
}

type matchRule struct {
	pattern string // "name", "*.name" or "*", lower case
	allow   bool
}

// NewMatcher compiles the policy's rules. Includes of [DefaultsInclude]
// expand to [DefaultHosts] (allowed); unknown includes and malformed rules
// match nothing.
func NewMatcher(p sprites.NetworkPolicy) *Matcher {
	m := &Matcher{}
	for _, r := range p.Rules {
		if r.Include == DefaultsInclude {
			for _, h := range DefaultHosts {
				m.rules = append(m.rules, matchRule{pattern: h, allow: true})
			}
			continue
		}
		d := strings.ToLower(r.Domain)
		if r.Include != "" || !domainRE.MatchString(d) || (r.Action != "allow" && r.Action != "deny") {
			continue
		}
		m.rules = append(m.rules, matchRule{pattern: d, allow: r.Action == "allow"})
	}
	return m
}

// Allowed reports whether host (a name, not an address; any case, an
// optional trailing dot) is allowed. As in Sprites, the most specific
// matching rule wins: an exact name over "*.suffix" (the longer suffix
// first) over "*"; between rules as specific as each other the first wins.
// "*.example.com" matches names under example.com, not example.com
// itself. A name no rule matches is denied.
func (m *Matcher) Allowed(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || !domainRE.MatchString(host) || strings.HasPrefix(host, "*") {
		return false
	}
	best, allow := -1, false
	for _, r := range m.rules {
		s := specificity(r.pattern, host)
		if s > best {
			best, allow = s, r.allow
		}
	}
	return allow
}

// specificity is how specifically pattern matches host: -1 for no match,
// 0 for "*", 1+len(suffix) for "*.suffix", and a value above every
// wildcard for the exact name.
func specificity(pattern, host string) int {
	switch {
	case pattern == "*":
		return 0
	case strings.HasPrefix(pattern, "*."):
		suffix := pattern[1:] // ".example.com"
		if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
			return 1 + len(suffix)
		}
		return -1
	case pattern == host:
		return 1 << 20
	}
	return -1
}
