package schema

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Skill limits (aod-api.md §3.3).
const (
	MaxSkillsPerAgent       = 20
	MaxSkillDescriptionLen  = 1024      // Unicode code points
	MaxSkillContentBytes    = 64 * 1024 // UTF-8 bytes
	SkillHeredocDelimiter   = "SKILL_EOF"
	skillNamePatternMessage = "[a-z0-9][a-z0-9-]{0,63}"
)

var (
	skillNameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	githubSourceRE = regexp.MustCompile(`^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$`)

	inlineSkillKeys      = []string{"content", "description", "name"}
	githubSkillKeys      = []string{"description", "name", "source", "type"}
	githubRequiredFields = []string{"type", "description", "source"}
	inlineRequiredFields = []string{"name", "description", "content"}
)

// ValidateSkills validates an agent's "skills" value (aod-api.md §3.3) and
// returns it unchanged, exactly as submitted. v must be a JSON array (else a
// list_type error); entries with a "type" key use the github shape, others
// the inline shape. The first rule broken is reported as one value_error at
// loc ["skills"] (the reference's field validator), for example
// "Value error, skills[1]: duplicate name 'lint'".
func ValidateSkills(v any) ([]any, error) {
	l := loc("skills")
	list, fe := asList(v, l)
	if fe != nil {
		return nil, &ValidationError{Errors: []FieldError{*fe}}
	}
	if msg := skillsProblem(list); msg != "" {
		return nil, &ValidationError{Errors: []FieldError{valueErr(l, v, msg)}}
	}
	return list, nil
}

// skillsProblem returns the reference's message for the first invalid skill,
// or "".
func skillsProblem(skills []any) string {
	if len(skills) > MaxSkillsPerAgent {
		return fmt.Sprintf("Maximum %d skills per agent", MaxSkillsPerAgent)
	}
	seen := map[string]bool{}
	for i, raw := range skills {
		skill, ok := raw.(map[string]any)
		if !ok {
			return fmt.Sprintf("skills[%d] must be an object", i)
		}
		var msg string
		if _, isGitHub := skill["type"]; isGitHub {
			msg = githubSkillProblem(skill, i)
		} else {
			msg = inlineSkillProblem(skill, i)
		}
		if msg != "" {
			return msg
		}
		name, hasName := skill["name"].(string)
		dedupKey, label := "", "name"
		if hasName {
			if !skillNameRE.MatchString(name) {
				return fmt.Sprintf("skills[%d].name %s must match %s", i, pyReprString(name), skillNamePatternMessage)
			}
			dedupKey = name
		} else {
			dedupKey, label = "@github:"+skill["source"].(string), "source"
		}
		if seen[dedupKey] {
			return fmt.Sprintf("skills[%d]: duplicate %s %s", i, label, pyReprString(dedupKey))
		}
		seen[dedupKey] = true
		if utf8.RuneCountInString(skill["description"].(string)) > MaxSkillDescriptionLen {
			return fmt.Sprintf("skills[%d].description exceeds %d chars", i, MaxSkillDescriptionLen)
		}
	}
	return ""
}

func unknownKeys(skill map[string]any, allowed []string) []string {
	var extra []string
	for _, k := range sortedKeys(skill) {
		if !slices.Contains(allowed, k) {
			extra = append(extra, k)
		}
	}
	return extra
}

func requiredStrings(skill map[string]any, i int, fields []string) string {
	for _, f := range fields {
		v, ok := skill[f]
		if !ok {
			return fmt.Sprintf("skills[%d] missing required field: %s", i, f)
		}
		if _, ok := v.(string); !ok {
			return fmt.Sprintf("skills[%d].%s must be a string", i, f)
		}
	}
	return ""
}

func inlineSkillProblem(skill map[string]any, i int) string {
	if extra := unknownKeys(skill, inlineSkillKeys); len(extra) > 0 {
		return fmt.Sprintf("skills[%d]: unknown keys %s. Allowed for inline skills: %s",
			i, pyRepr(extra), pyRepr(inlineSkillKeys))
	}
	if msg := requiredStrings(skill, i, inlineRequiredFields); msg != "" {
		return msg
	}
	content := skill["content"].(string)
	if len(content) > MaxSkillContentBytes {
		return fmt.Sprintf("skills[%d].content exceeds %d bytes", i, MaxSkillContentBytes)
	}
	if strings.Contains(content, SkillHeredocDelimiter) {
		return fmt.Sprintf("skills[%d].content must not contain %s", i, pyReprString(SkillHeredocDelimiter))
	}
	return ""
}

func githubSkillProblem(skill map[string]any, i int) string {
	if extra := unknownKeys(skill, githubSkillKeys); len(extra) > 0 {
		return fmt.Sprintf("skills[%d]: unknown keys %s. Allowed for github skills: %s",
			i, pyRepr(extra), pyRepr(githubSkillKeys))
	}
	if msg := requiredStrings(skill, i, githubRequiredFields); msg != "" {
		return msg
	}
	if name, ok := skill["name"]; ok {
		if _, isStr := name.(string); !isStr {
			return fmt.Sprintf("skills[%d].name must be a string", i)
		}
	}
	if typ := skill["type"].(string); typ != "github" {
		return fmt.Sprintf("skills[%d].type %s unsupported (only 'github')", i, pyReprString(typ))
	}
	if src := skill["source"].(string); !githubSourceRE.MatchString(src) {
		return fmt.Sprintf("skills[%d].source %s must be 'owner/repo'", i, pyReprString(src))
	}
	return ""
}
