package runner

import "os"

// Processes that run for a sandbox (the shim, slirp4netns, bwrap and the
// sandbox's commands) get an explicit, minimal environment: never aod's,
// which holds DATABASE_URL, SPRITES_API_KEY, the encryption keys and
// whatever else the operator set.

// shimEnviron is the exec shim's environment: what marks it as the shim
// and PATH, to find bwrap and slirp4netns.
func shimEnviron(dir string) []string {
	env := []string{shimEnv + "=1", shimDirEnv + "=" + dir}
	if path := os.Getenv("PATH"); path != "" {
		env = append(env, "PATH="+path)
	}
	return env
}

// slirpEnviron is slirp4netns's environment: empty.
func slirpEnviron() []string { return []string{} }
