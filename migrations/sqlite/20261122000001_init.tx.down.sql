DROP TABLE IF EXISTS agent_session_logs;
--bun:split
DROP TABLE IF EXISTS session_secret_env_vars;
--bun:split
DROP TABLE IF EXISTS session_resources;
--bun:split
DROP TABLE IF EXISTS session_turns;
--bun:split
DROP TABLE IF EXISTS agent_sessions;
--bun:split
DROP TABLE IF EXISTS agent_versions;
--bun:split
DROP TABLE IF EXISTS agents;
--bun:split
DROP TABLE IF EXISTS environment_versions;
--bun:split
DROP TABLE IF EXISTS environments;
--bun:split
DROP TABLE IF EXISTS user_quotas;
--bun:split
DROP TABLE IF EXISTS api_keys;
--bun:split
DROP TABLE IF EXISTS users;
