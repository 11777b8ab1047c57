-- Second wave foundation. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Jobs belong to a user id (a renamed user keeps their jobs; a new user of an old name
-- does not get them), record what started them, and carry what a queue that leaves the
-- process will need: their lock, attempt, when they may run next and which node runs them.
ALTER TABLE jobs ADD COLUMN owner_id BIGINT;
ALTER TABLE jobs ADD COLUMN api_key_id BIGINT;
ALTER TABLE jobs ADD COLUMN origin TEXT;
ALTER TABLE jobs ADD COLUMN lock_key TEXT;
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN run_after BIGINT;
ALTER TABLE jobs ADD COLUMN node TEXT;
UPDATE jobs SET owner_id = (SELECT users.id FROM users WHERE users.username = jobs.owner);
CREATE INDEX jobs_owner_id ON jobs (owner_id, id);
CREATE INDEX jobs_owner_finished ON jobs (owner_id, time_finished);

-- API keys belong to a user id, not to a name.
ALTER TABLE api_keys ADD COLUMN user_id BIGINT;
UPDATE api_keys SET user_id = (SELECT users.id FROM users WHERE users.username = api_keys.username);

-- Plugin settings: one JSON object per namespace.
CREATE TABLE settings (
    namespace TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
