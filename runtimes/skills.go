package runtimes

import "io/fs"

// File is one file to write into the sandbox (parent directories are
// created by the writer).
type File struct {
	// Path is absolute.
	Path string
	Data []byte
	Mode fs.FileMode
}

// skill is one entry of an agent's skills list (aod-api.md §3.3).
type skill struct {
	github  bool
	name    string // optional for github skills
	content string // inline only
	source  string // github only: owner/repo
}

// parseSkills reads the agent's skills list. An entry whose "type" is
// "github" is a GitHub skill, any other object an inline one. Entries that
// are not objects, inline skills without a string name or content, and GitHub skills
// without a string source are skipped (validation happens upstream).
func parseSkills(skills []any) []skill {
	var out []skill
	for _, raw := range skills {
		m, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		name, _ := m["name"].(string)
		if t, _ := m["type"].(string); t == "github" {
			src, ok := m["source"].(string)
			if !ok || src == "" {
				continue
			}
			out = append(out, skill{github: true, name: name, source: src})
			continue
		}
		if name == "" {
			continue
		}
		content, ok := m["content"].(string)
		if !ok {
			continue
		}
		out = append(out, skill{name: name, content: content})
	}
	return out
}

// InlineSkillFiles returns one <SkillsRoot(r)>/<name>/SKILL.md per inline
// skill, in list order, mode 0644. The file holds the skill's content
// exactly as the user gave it: no frontmatter is added, so a SKILL.md
// frontmatter (name, description) is the author's to write. Nil for an
// unknown runtime or when there are no inline skills.
func InlineSkillFiles(r Runtime, skills []any) []File {
	root := SkillsRoot(r)
	if root == "" {
		return nil
	}
	var files []File
	for _, s := range parseSkills(skills) {
		if s.github {
			continue
		}
		files = append(files, File{Path: root + "/" + s.name + "/SKILL.md", Data: []byte(s.content), Mode: 0o644})
	}
	return files
}

// GitHubSkillCommands returns, per GitHub skill in list order, the argv
// that installs it with skills.sh:
//
//	bash -lc "npx -y skills@latest add <source> --global --agent <agent> --yes[ --skill <name>]"
//
// with source, agent and name shell-quoted; --skill is added only when the
// skill has a non-empty name. Nil for an unknown runtime or when there are
// no GitHub skills.
func GitHubSkillCommands(r Runtime, skills []any) [][]string {
	agent := SkillsAgent(r)
	if agent == "" {
		return nil
	}
	var cmds [][]string
	for _, s := range parseSkills(skills) {
		if !s.github {
			continue
		}
		cmd := "npx -y skills@latest add " + ShellQuote(s.source) + " --global --agent " + ShellQuote(agent) + " --yes"
		if s.name != "" {
			cmd += " --skill " + ShellQuote(s.name)
		}
		cmds = append(cmds, []string{"bash", "-lc", cmd})
	}
	return cmds
}
