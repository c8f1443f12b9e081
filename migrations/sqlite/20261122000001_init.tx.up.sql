CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username    varchar(150) NOT NULL UNIQUE,
    created_at  text NOT NULL
);
--bun:split
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_hash    char(64) NOT NULL UNIQUE,
    key_prefix  varchar(12) NOT NULL,
    name        varchar(100) NOT NULL DEFAULT '',
    is_active   integer NOT NULL DEFAULT 1,
    created_at  text NOT NULL,
    expires_at  text
);
--bun:split
CREATE INDEX api_keys_prefix_idx ON api_keys (key_prefix);
--bun:split
CREATE TABLE user_quotas (
    user_id                 bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    max_concurrent_sessions integer
);
--bun:split
CREATE TABLE environments (
    id                text PRIMARY KEY,
    user_id           bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name              varchar(200) NOT NULL,
    packages          text NOT NULL,
    env_vars          text NOT NULL,
    setup_script      text NOT NULL DEFAULT '',
    networking_type   varchar(16) NOT NULL,
    networking_config text NOT NULL,
    version           integer NOT NULL,
    created_at        text NOT NULL,
    updated_at        text NOT NULL,
    archived_at       text
);
--bun:split
CREATE UNIQUE INDEX environments_active_name_uniq ON environments (user_id, name) WHERE archived_at IS NULL;
--bun:split
CREATE TABLE environment_versions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    environment_id    text NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    version           integer NOT NULL,
    name              varchar(200) NOT NULL,
    packages          text NOT NULL,
    env_vars          text NOT NULL,
    setup_script      text NOT NULL DEFAULT '',
    networking_type   varchar(16) NOT NULL,
    networking_config text NOT NULL,
    created_at        text NOT NULL,
    UNIQUE (environment_id, version)
);
--bun:split
CREATE TABLE agents (
    id             text PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           varchar(200) NOT NULL,
    description    text NOT NULL DEFAULT '',
    system         text NOT NULL DEFAULT '',
    provider       varchar(32) NOT NULL,
    model          varchar(100) NOT NULL,
    runtime        varchar(32) NOT NULL,
    environment_id text REFERENCES environments(id) ON DELETE SET NULL,
    skills         text NOT NULL,
    mcp_servers    text NOT NULL,
    metadata       text NOT NULL,
    version        integer NOT NULL,
    created_at     text NOT NULL,
    updated_at     text NOT NULL,
    archived_at    text
);
--bun:split
CREATE TABLE agent_versions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id       text NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    version        integer NOT NULL,
    name           varchar(200) NOT NULL,
    description    text NOT NULL DEFAULT '',
    system         text NOT NULL DEFAULT '',
    provider       varchar(32) NOT NULL,
    model          varchar(100) NOT NULL,
    runtime        varchar(32) NOT NULL,
    environment_id text,
    skills         text NOT NULL,
    mcp_servers    text NOT NULL,
    metadata       text NOT NULL,
    created_at     text NOT NULL,
    UNIQUE (agent_id, version)
);
--bun:split
CREATE TABLE agent_sessions (
    id                 text PRIMARY KEY,
    user_id            bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    agent_id           text REFERENCES agents(id) ON DELETE SET NULL,
    environment_id     text REFERENCES environments(id) ON DELETE SET NULL,
    provider           varchar(32) NOT NULL DEFAULT '',
    runtime            varchar(32) NOT NULL,
    prompt             text NOT NULL DEFAULT '',
    backend            varchar(32) NOT NULL,
    backend_handle     varchar(100) NOT NULL DEFAULT '',
    runtime_session_id text NOT NULL,
    status             varchar(16) NOT NULL,
    exit_code          integer,
    owner_node         varchar(200) NOT NULL DEFAULT '',
    owner_epoch        bigint NOT NULL DEFAULT 0,
    lease_until        text,
    provisioned_at     text,
    created_at         text NOT NULL,
    updated_at         text NOT NULL
);
--bun:split
CREATE INDEX agent_sessions_user_status_idx ON agent_sessions (user_id, status);
--bun:split
CREATE INDEX agent_sessions_environment_idx ON agent_sessions (environment_id);
--bun:split
CREATE INDEX agent_sessions_active_idx ON agent_sessions (status) WHERE status IN ('pending', 'running');
--bun:split
CREATE TABLE session_turns (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      text NOT NULL REFERENCES agent_sessions(id) ON DELETE CASCADE,
    turn_number     integer NOT NULL,
    prompt          text NOT NULL,
    mode            varchar(16) NOT NULL DEFAULT 'run',
    timeout_seconds integer NOT NULL DEFAULT 600,
    status          varchar(16) NOT NULL,
    exit_code       integer,
    exec_id         varchar(100) NOT NULL DEFAULT '',
    stdout_offset   bigint NOT NULL DEFAULT 0,
    stderr_offset   bigint NOT NULL DEFAULT 0,
    created_at      text NOT NULL,
    started_at      text,
    ended_at        text,
    UNIQUE (session_id, turn_number)
);
--bun:split
CREATE TABLE session_resources (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      text NOT NULL REFERENCES agent_sessions(id) ON DELETE CASCADE,
    position        integer NOT NULL,
    resource_type   varchar(32) NOT NULL,
    url             varchar(500) NOT NULL,
    mount_path      varchar(500) NOT NULL,
    encrypted_token text
);
--bun:split
CREATE INDEX session_resources_session_idx ON session_resources (session_id, position);
--bun:split
CREATE TABLE session_secret_env_vars (
    session_id         text PRIMARY KEY REFERENCES agent_sessions(id) ON DELETE CASCADE,
    encrypted_env_vars text NOT NULL
);
--bun:split
CREATE TABLE agent_session_logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  text NOT NULL REFERENCES agent_sessions(id) ON DELETE CASCADE,
    turn        integer,
    kind        varchar(16) NOT NULL,
    stream      varchar(8) NOT NULL DEFAULT '',
    data        text NOT NULL DEFAULT '',
    stage       varchar(32) NOT NULL DEFAULT '',
    state       varchar(16) NOT NULL DEFAULT '',
    duration_ms integer,
    created_at  text NOT NULL
);
--bun:split
CREATE INDEX agent_session_logs_session_id_idx ON agent_session_logs (session_id, id);
