// Package runtimes knows what each agent runtime (claude, codex, gemini,
// opencode) needs inside a sandbox, and renders it. Every function here is
// pure: it returns the bytes to write, the argv to exec, or the rules to
// apply, and never does I/O. The session provisioner and the turn runner do
// the writing and running, in the stage order of aod-api.md §7.1:
//
//	create_sprite     create the sandbox                     (CreateSpriteFailed)
//	install_runtime   InstallCommand, before the policy      (InstallRuntimeFailed)
//	network_policy    NetworkRules, only when "limited"      (PrepareFailed / NetworkPolicyFailed)
//	env_file          EnvFile → EnvFilePath                  (PrepareFailed)
//	git_credentials   GitCredentials → GitCredentialsPath    (PrepareFailed), only with tokens
//	provision_setup   ProvisionScript → ProvisionScriptPath,
//	                  run as ProvisionArgv                   (ProvisionScriptFailed)
//	runtime_config    ConfigFiles                            (RuntimeConfigFailed)
//	skills            InlineSkillFiles, GitHubSkillCommands  (SkillsFailed), only with skills
//	runtime_start     per turn: Argv in WorkDir, prompt on stdin
//
// Inputs that come from stored agent JSON (skills, MCP servers) are taken as
// decoded JSON ([]any of map[string]any) and were validated upstream
// (aod-api.md §3.3, §3.4); entries of an unexpected shape are skipped rather
// than rejected. Maps whose order the stored JSON does not keep (headers, env,
// env vars) are rendered with their keys sorted, so output is deterministic.
package runtimes
