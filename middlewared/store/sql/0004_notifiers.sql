-- Notifiers (PROTOCOL.md section 9): named destinations told of a job's end. Portable SQL:
-- runs unchanged on SQLite and PostgreSQL. 0003 is the triggers' migration.
CREATE TABLE notifiers (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    -- JSON array of addresses (mail).
    recipients TEXT NOT NULL DEFAULT '[]',
    url TEXT,
    -- The webhook's signing key: written, never shown.
    secret TEXT,
    created BIGINT NOT NULL
);

INSERT INTO counters (name, value) VALUES ('notifiers', 0);
