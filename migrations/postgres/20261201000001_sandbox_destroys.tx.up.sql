CREATE TABLE sandbox_destroys (
    backend         varchar(32) NOT NULL,
    handle          varchar(100) NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text NOT NULL DEFAULT '',
    PRIMARY KEY (backend, handle)
);
--bun:split
CREATE INDEX sandbox_destroys_due_idx ON sandbox_destroys (backend, next_attempt_at);
--bun:split
ALTER TABLE session_turns ADD COLUMN system_prompt text NOT NULL DEFAULT '';
