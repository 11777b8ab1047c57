-- Commands (PROTOCOL.md section 10): shell lines an administrator keeps under a name, run as
-- jobs. Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE commands (
    name TEXT PRIMARY KEY,
    -- The command's JSON record, secret env values included (never shown).
    record TEXT NOT NULL,
    -- The last run's counter (karajo's KARAJO_JOB_COUNTER); runs count on from it.
    runs BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL
);

-- One row per run: the history command.logs lists (its log file is named after it), and the
-- process group of the line running now, so that after a crash of the server the processes
-- it left are found and ended at the next start.
CREATE TABLE command_runs (
    command TEXT NOT NULL,
    counter BIGINT NOT NULL,
    job_id BIGINT NOT NULL,
    -- running, success or fail (karajo's names); state: the job's end state.
    status TEXT NOT NULL,
    state TEXT,
    started BIGINT NOT NULL,
    finished BIGINT,
    pgid BIGINT,
    boot_id TEXT,
    pid_start BIGINT,
    PRIMARY KEY (command, counter)
);
CREATE INDEX command_runs_status ON command_runs (status);
