-- Triggers: what starts jobs by itself. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- A trigger is its JSON record (data, owner, state) plus the columns the engine looks up.
CREATE TABLE triggers (
    id BIGINT PRIMARY KEY,
    type TEXT NOT NULL,
    owner_id BIGINT,
    paused INTEGER NOT NULL DEFAULT 0,
    next_run BIGINT,
    hook_path TEXT,
    record TEXT NOT NULL
);
CREATE UNIQUE INDEX triggers_hook_path ON triggers (hook_path);

-- One row per fire: stored in the transaction that inserts the job it starts, so that a
-- fire is never lost once acknowledged and never run twice (the key refuses a second fire
-- of the same trigger for the same due time, on one node or several).
CREATE TABLE trigger_fires (
    trigger_id BIGINT NOT NULL,
    due BIGINT NOT NULL,
    job_id BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, due)
);

-- Open debounce windows: stored when they open, so that a window survives a restart.
CREATE TABLE trigger_windows (
    trigger_id BIGINT PRIMARY KEY,
    fires_at BIGINT NOT NULL,
    events TEXT NOT NULL
);

INSERT INTO counters (name, value) VALUES ('triggers', 0);
