package schema

import (
	"regexp"
	"slices"
)

// Environment limits and allowlists (aod-api.md §2.2).
const (
	MaxEnvironmentNameLen = 200

	NetworkingUnrestricted = "unrestricted"
	NetworkingLimited      = "limited"

	MsgNetworkingType         = "networking.type must be 'unrestricted' or 'limited'"
	MsgNetworkingAllowedHosts = "networking.allowed_hosts must be a list"
)

// PackageManagers are the allowed keys of an environment's "packages".
var PackageManagers = []string{"apt", "cargo", "gem", "go", "npm", "pip"}

var envVarKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// UnknownPackageManagerMessage is the value_error text for a packages key
// outside PackageManagers.
func UnknownPackageManagerMessage(manager string) string {
	return "Unknown package manager: " + manager + ". Must be one of: " + pyRepr(PackageManagers)
}

// InvalidEnvVarKeyMessage is the value_error text for an env_vars or
// secret_env_vars key that does not fully match [A-Za-z_][A-Za-z0-9_]*.
func InvalidEnvVarKeyMessage(key string) string {
	return "Invalid env_var key " + pyReprString(key) + ": must match [A-Za-z_][A-Za-z0-9_]*"
}

// Networking is an environment's networking setting.
type Networking struct {
	// Type is NetworkingUnrestricted or NetworkingLimited.
	Type string
	// Config is every submitted networking key except "type", verbatim
	// (stored as networking_config; never nil).
	Config map[string]any
}

// EnvironmentCreate is a validated POST /environments body.
type EnvironmentCreate struct {
	// Name is ≤200 characters; uniqueness is checked by the caller.
	Name string
	// Packages maps a package manager to package names (never nil).
	Packages map[string][]string
	// EnvVars are the environment variables (never nil).
	EnvVars map[string]string
	// SetupScript is "" when absent.
	SetupScript string
	// Networking defaults to unrestricted with an empty Config.
	Networking Networking
}

// DecodeEnvironmentCreate validates a POST /environments body
// (*ValidationError on failure).
func DecodeEnvironmentCreate(body map[string]any) (*EnvironmentCreate, error) {
	var e errs
	out := &EnvironmentCreate{
		Packages:   map[string][]string{},
		EnvVars:    map[string]string{},
		Networking: Networking{Type: NetworkingUnrestricted, Config: map[string]any{}},
	}
	out.Name = requiredString(&e, body, "name", MaxEnvironmentNameLen)
	if v, ok := body["packages"]; ok {
		if p := decodePackages(&e, v); p != nil {
			out.Packages = p
		}
	}
	if v, ok := body["env_vars"]; ok {
		if m := decodeEnvVars(&e, v, "env_vars"); m != nil {
			out.EnvVars = m
		}
	}
	out.SetupScript = optionalString(&e, body, "setup_script", 0)
	if v, ok := body["networking"]; ok {
		if n := decodeNetworking(&e, v); n != nil {
			out.Networking = *n
		}
	}
	if err := withNULCheck(e.err(), body, environmentFields); err != nil {
		return nil, err
	}
	return out, nil
}

// EnvironmentUpdate is a validated PUT /environments/{id} body. Nil fields
// (key absent or null) are unchanged.
type EnvironmentUpdate struct {
	// Version is the version the client last saw.
	Version int64
	// Name, when set, renames the environment (≤200 characters).
	Name *string
	// Packages, when non-nil, replaces the packages.
	Packages map[string][]string
	// EnvVars, when non-nil, replaces the whole env_vars map.
	EnvVars map[string]string
	// SetupScript, when set, replaces the setup script.
	SetupScript *string
	// Networking, when set, is the new networking type and config.
	Networking *Networking
}

// DecodeEnvironmentUpdate validates a PUT /environments/{id} body
// (*ValidationError on failure). Unlike the reference it also enforces the
// 200-character name limit.
func DecodeEnvironmentUpdate(body map[string]any) (*EnvironmentUpdate, error) {
	var e errs
	out := &EnvironmentUpdate{}
	out.Version = requiredInt(&e, body, "version", intBounds{})
	out.Name = optionalNullableString(&e, body, "name", MaxEnvironmentNameLen)
	if v := body["packages"]; v != nil {
		out.Packages = decodePackages(&e, v)
	}
	if v := body["env_vars"]; v != nil {
		out.EnvVars = decodeEnvVars(&e, v, "env_vars")
	}
	out.SetupScript = optionalNullableString(&e, body, "setup_script", 0)
	if v := body["networking"]; v != nil {
		out.Networking = decodeNetworking(&e, v)
	}
	if err := withNULCheck(e.err(), body, environmentFields); err != nil {
		return nil, err
	}
	return out, nil
}

// decodePackages validates `dict[str, list[str]]` plus the manager
// allowlist; nil on failure.
func decodePackages(e *errs, v any) map[string][]string {
	l := loc("packages")
	m, fe := asDict(v, l)
	if fe != nil {
		e.add(*fe)
		return nil
	}
	out := make(map[string][]string, len(m))
	var bad []FieldError
	for _, k := range sortedKeys(m) {
		kl := append(cloneLoc(l), k)
		items, fe := asList(m[k], kl)
		if fe != nil {
			bad = append(bad, *fe)
			continue
		}
		names := make([]string, 0, len(items))
		for i, item := range items {
			s, fe := asString(item, append(cloneLoc(kl), i), 0)
			if fe != nil {
				bad = append(bad, *fe)
				continue
			}
			names = append(names, s)
		}
		out[k] = names
	}
	if bad != nil {
		e.add(bad...)
		return nil
	}
	for _, k := range sortedKeys(m) {
		if !slices.Contains(PackageManagers, k) {
			e.add(valueErr(l, v, UnknownPackageManagerMessage(k)))
			return nil
		}
	}
	return out
}

// decodeEnvVars validates `dict[str, str]` plus the key regex; nil on
// failure. field is the body key, used for loc.
func decodeEnvVars(e *errs, v any, field string) map[string]string {
	l := loc(field)
	m, fes := asStringMap(v, l)
	if fes != nil {
		e.add(fes...)
		return nil
	}
	for _, k := range sortedKeys(m) {
		if !envVarKeyRE.MatchString(k) {
			e.add(valueErr(l, v, InvalidEnvVarKeyMessage(k)))
			return nil
		}
	}
	return m
}

// decodeNetworking validates the networking object; nil on failure.
func decodeNetworking(e *errs, v any) *Networking {
	l := loc("networking")
	m, fe := asDict(v, l)
	if fe != nil {
		e.add(*fe)
		return nil
	}
	typ := NetworkingUnrestricted
	if t, ok := m["type"]; ok {
		s, isStr := t.(string)
		if !isStr || (s != NetworkingUnrestricted && s != NetworkingLimited) {
			e.add(valueErr(l, v, MsgNetworkingType))
			return nil
		}
		typ = s
	}
	if typ == NetworkingLimited {
		if h, ok := m["allowed_hosts"]; ok {
			if _, isList := h.([]any); !isList {
				e.add(valueErr(l, v, MsgNetworkingAllowedHosts))
				return nil
			}
		}
	}
	cfg := make(map[string]any, len(m))
	for k, val := range m {
		if k != "type" {
			cfg[k] = val
		}
	}
	return &Networking{Type: typ, Config: cfg}
}
