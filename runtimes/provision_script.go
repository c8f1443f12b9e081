package runtimes

import (
	"slices"
	"strings"
)

// Repo is a repository cloned into the sandbox by the provision script.
type Repo struct {
	// URL is https://github.com/<owner>/<repo>, cloned as is.
	URL string
	// MountPath is the clone's destination.
	MountPath string
	// Token is the repository's GitHub token, or "".
	Token string
}

// ProvisionParams is what the provision script depends on.
type ProvisionParams struct {
	Runtime Runtime
	// MCPServers is the agent's mcp_servers list; only whether it is
	// non-empty matters here (gemini and opencode then need their config
	// directory).
	MCPServers []any
	// Skills is the agent's skills list; each inline skill gets its
	// directory created.
	Skills []any
	// Packages maps a package manager (apt, cargo, gem, go, npm, pip) to
	// package names. Other managers are ignored.
	Packages map[string][]string
	// Repos are cloned in order.
	Repos []Repo
	// SetupScript is the environment's setup_script; it runs last, trimmed.
	SetupScript string
}

// PackageManagers lists the package managers in the order the provision
// script runs them.
var PackageManagers = []string{"apt", "cargo", "gem", "go", "npm", "pip"}

// ProvisionScript returns the body of ProvisionScriptPath, laid out like the
// reference (a blank line after each section):
//
//	#!/bin/bash
//	set -e
//
//	mkdir -p <dirs, sorted>                      (when any)
//
//	chmod 600 /tmp/aod-env
//	chmod 600 /tmp/.git-credentials              (when a repo has a token)
//
//	<package commands: apt, cargo, gem, go, npm, pip>   (when any)
//
//	git config --global credential.helper 'store --file=/tmp/.git-credentials'   (when a repo has a token)
//	git clone --depth=1 --quiet <url> <mount_path>      (per repo)
//
//	<trimmed setup script>                       (when non-blank)
//
// The directories are: /home/sprite/.codex always for codex;
// /home/sprite/.gemini or /home/sprite/.config/opencode when MCPServers is
// non-empty; <SkillsRoot>/<name> per inline skill. Package commands are
// "apt-get update -qq && apt-get install -y <pkgs>", "cargo install <p>" per
// package, "gem install <pkgs>", "go install <p>" per package,
// "npm install --global <pkgs>", "pip install <pkgs>". Every directory,
// package, URL and path is shell-quoted. The body ends with a newline.
func ProvisionScript(p ProvisionParams) []byte {
	lines := []string{"#!/bin/bash", "set -e", ""}

	dirs := provisionDirs(p)
	if len(dirs) > 0 {
		lines = append(lines, "mkdir -p "+shellJoin(dirs), "")
	}

	hasToken := false
	for _, r := range p.Repos {
		if r.Token != "" {
			hasToken = true
			break
		}
	}
	lines = append(lines, "chmod 600 "+ShellQuote(EnvFilePath))
	if hasToken {
		lines = append(lines, "chmod 600 "+ShellQuote(GitCredentialsPath))
	}
	lines = append(lines, "")

	if pkgs := packageCommands(p.Packages); len(pkgs) > 0 {
		lines = append(lines, pkgs...)
		lines = append(lines, "")
	}

	if len(p.Repos) > 0 {
		if hasToken {
			lines = append(lines, "git config --global credential.helper "+
				ShellQuote("store --file="+GitCredentialsPath))
		}
		for _, r := range p.Repos {
			lines = append(lines, "git clone --depth=1 --quiet "+ShellQuote(r.URL)+" "+ShellQuote(r.MountPath))
		}
		lines = append(lines, "")
	}

	if s := strings.TrimSpace(p.SetupScript); s != "" {
		lines = append(lines, s, "")
	}
	return []byte(strings.Join(lines, "\n"))
}

// provisionDirs returns the sorted directories the provision script creates
// for files written after it runs.
func provisionDirs(p ProvisionParams) []string {
	var dirs []string
	if d := configDir(p.Runtime); d != "" && (p.Runtime == Codex || len(p.MCPServers) > 0) {
		dirs = append(dirs, d)
	}
	if root := SkillsRoot(p.Runtime); root != "" {
		for _, s := range parseSkills(p.Skills) {
			if !s.github {
				dirs = append(dirs, root+"/"+s.name)
			}
		}
	}
	slices.Sort(dirs)
	return dirs
}

func packageCommands(pkgs map[string][]string) []string {
	var out []string
	for _, m := range PackageManagers {
		names := pkgs[m]
		if len(names) == 0 {
			continue
		}
		switch m {
		case "apt":
			out = append(out, "apt-get update -qq && apt-get install -y "+shellJoin(names))
		case "cargo":
			for _, n := range names {
				out = append(out, "cargo install "+ShellQuote(n))
			}
		case "gem":
			out = append(out, "gem install "+shellJoin(names))
		case "go":
			for _, n := range names {
				out = append(out, "go install "+ShellQuote(n))
			}
		case "npm":
			out = append(out, "npm install --global "+shellJoin(names))
		case "pip":
			out = append(out, "pip install "+shellJoin(names))
		}
	}
	return out
}
