package runtimes

import "github.com/aodhq/aod/sprites"

// NetworkRules returns the egress rules of a "limited" environment: one
// {domain: host, action: "allow"} per allowed host, in order, then
// {domain: "*", action: "deny"}. An empty list gives deny-all. Environments
// whose networking is "unrestricted" get no policy at all (the
// network_policy stage is skipped).
func NetworkRules(allowedHosts []string) []sprites.Rule {
	rules := make([]sprites.Rule, 0, len(allowedHosts)+1)
	for _, h := range allowedHosts {
		rules = append(rules, sprites.Rule{Domain: h, Action: "allow"})
	}
	return append(rules, sprites.Rule{Domain: "*", Action: "deny"})
}
