ALTER TABLE session_turns DROP COLUMN system_prompt;
--bun:split
DROP TABLE IF EXISTS sandbox_destroys;
