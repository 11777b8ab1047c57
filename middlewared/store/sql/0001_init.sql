-- Initial schema. Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE jobs (
    id BIGINT PRIMARY KEY,
    method TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    description TEXT,
    time_started BIGINT,
    time_finished BIGINT,
    progress_percent DOUBLE PRECISION,
    error TEXT,
    retry_on_restart INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_method ON jobs (method, id);
CREATE INDEX jobs_owner ON jobs (owner, id);
CREATE INDEX jobs_finished ON jobs (time_finished);

CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    full_name TEXT NOT NULL DEFAULT '',
    password_hash TEXT,
    admin INTEGER NOT NULL DEFAULT 0,
    locked INTEGER NOT NULL DEFAULT 0,
    allowlist TEXT NOT NULL DEFAULT '[]',
    created BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    username TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    allowlist TEXT NOT NULL DEFAULT '[]',
    created BIGINT NOT NULL,
    expires BIGINT
);

INSERT INTO counters (name, value) VALUES ('jobs', 0);
INSERT INTO counters (name, value) VALUES ('users', 0);
INSERT INTO counters (name, value) VALUES ('api_keys', 0);
