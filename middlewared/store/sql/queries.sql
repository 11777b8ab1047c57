-- Named queries used by the stores. Parameters are :named; each backend maps them.

-- name: get_meta
SELECT value FROM meta WHERE name = :name;

-- name: set_meta
INSERT INTO meta (name, value) VALUES (:name, :value)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- name: get_counter
SELECT value FROM counters WHERE name = :name;

-- name: raise_counter
UPDATE counters SET value = :value WHERE name = :name AND value < :value;

-- name: insert_job
INSERT INTO jobs (id, method, state, owner, owner_id, api_key_id, origin, lock_key, attempt,
                  run_after, description, time_started, time_finished, progress_percent, error,
                  retry_on_restart, record)
VALUES (:id, :method, :state, :owner, :owner_id, :api_key_id, :origin, :lock_key, :attempt,
        :run_after, :description, :time_started, :time_finished, :progress_percent, :error,
        :retry_on_restart, :record);

-- name: update_job
UPDATE jobs SET state = :state, description = :description, time_started = :time_started,
       time_finished = :time_finished, progress_percent = :progress_percent, error = :error,
       attempt = :attempt, run_after = :run_after, record = :record
WHERE id = :id;

-- name: get_job
SELECT record FROM jobs WHERE id = :id;

-- name: unfinished_jobs
SELECT record, retry_on_restart, owner_id, origin FROM jobs
WHERE state IN ('WAITING', 'RUNNING') ORDER BY id;

-- Retention. Only finished jobs have a time_finished: both walk the jobs_finished index
-- (by state and id instead, each scanned and sorted every finished job).

-- name: expired_job_ids
SELECT id, owner_id, method, api_key_id FROM jobs WHERE time_finished < :before
ORDER BY time_finished LIMIT :limit;

-- name: job_owners
-- Retention by count is per owner (one user's flood never purges another's jobs). The
-- owners are found by one index seek each (a loose index scan), not by reading every row.
WITH RECURSIVE owners (owner_id) AS (
    SELECT MIN(owner_id) FROM jobs WHERE owner_id IS NOT NULL
    UNION ALL
    SELECT (SELECT MIN(j.owner_id) FROM jobs j WHERE j.owner_id > owners.owner_id)
    FROM owners WHERE owners.owner_id IS NOT NULL
)
SELECT owner_id FROM owners WHERE owner_id IS NOT NULL;

-- name: finished_job_ids_beyond
-- Past the newest :keep of one owner by finishing time: skips :keep entries of the
-- (owner_id, time_finished) index, never reads their rows.
SELECT id, owner_id, method, api_key_id FROM jobs WHERE owner_id = :owner_id AND time_finished IS NOT NULL
ORDER BY time_finished DESC LIMIT :limit OFFSET :keep;

-- name: finished_job_ids_beyond_no_owner
SELECT id, owner_id, method, api_key_id FROM jobs WHERE owner_id IS NULL AND time_finished IS NOT NULL
ORDER BY time_finished DESC LIMIT :limit OFFSET :keep;

-- name: job_id_span
SELECT (SELECT MAX(id) FROM jobs) - (SELECT MIN(id) FROM jobs) + 1 AS span;

-- name: delete_job
DELETE FROM jobs WHERE id = :id;

-- name: job_ref
SELECT owner_id, method, api_key_id FROM jobs WHERE id = :id;

-- name: insert_user
INSERT INTO users (id, username, full_name, password_hash, admin, locked, allowlist, created,
                   twofactor, email)
VALUES (:id, :username, :full_name, :password_hash, :admin, :locked, :allowlist, :created,
        :twofactor, :email);

-- name: update_user
UPDATE users SET username = :username, full_name = :full_name, password_hash = :password_hash,
       admin = :admin, locked = :locked, allowlist = :allowlist, twofactor = :twofactor,
       email = :email
WHERE id = :id;

-- name: delete_user
DELETE FROM users WHERE id = :id;

-- name: all_users
SELECT id, username, full_name, password_hash, admin, locked, allowlist, created, twofactor,
       email
FROM users ORDER BY id;

-- name: insert_api_key
INSERT INTO api_keys (id, name, username, user_id, key_hash, allowlist, created, expires, scram)
VALUES (:id, :name, :username, :user_id, :key_hash, :allowlist, :created, :expires, :scram);

-- name: set_api_key_scram
UPDATE api_keys SET scram = :scram WHERE id = :id;

-- name: update_api_key
UPDATE api_keys SET name = :name, allowlist = :allowlist, expires = :expires WHERE id = :id;

-- name: delete_api_key
DELETE FROM api_keys WHERE id = :id;

-- name: delete_user_api_keys
DELETE FROM api_keys WHERE user_id = :user_id;

-- name: all_api_keys
SELECT id, name, user_id, key_hash, allowlist, created, expires, scram FROM api_keys ORDER BY id;

-- name: all_settings
SELECT namespace, value FROM settings ORDER BY namespace;

-- name: set_settings
INSERT INTO settings (namespace, value) VALUES (:namespace, :value)
ON CONFLICT (namespace) DO UPDATE SET value = excluded.value;

-- name: insert_notifier
INSERT INTO notifiers (id, name, kind, recipients, url, secret, created, extra)
VALUES (:id, :name, :kind, :recipients, :url, :secret, :created, :extra);

-- name: update_notifier
UPDATE notifiers SET name = :name, kind = :kind, recipients = :recipients, url = :url,
       secret = :secret, extra = :extra
WHERE id = :id;

-- name: delete_notifier
DELETE FROM notifiers WHERE id = :id;

-- name: all_notifiers
SELECT id, name, kind, recipients, url, secret, created, extra FROM notifiers ORDER BY id;

-- name: restore_config
-- Runs with the snapshot attached as "bak", in one transaction.
DELETE FROM users;
INSERT INTO users (id, username, full_name, password_hash, admin, locked, allowlist, created,
                   twofactor, email)
SELECT id, username, full_name, password_hash, admin, locked, allowlist, created, twofactor,
       email
FROM bak.users;
DELETE FROM api_keys;
INSERT INTO api_keys (id, name, username, user_id, key_hash, allowlist, created, expires, scram)
SELECT id, name, username, user_id, key_hash, allowlist, created, expires, scram FROM bak.api_keys;
DELETE FROM meta;
INSERT INTO meta (name, value) SELECT name, value FROM bak.meta;
DELETE FROM settings;
INSERT INTO settings (namespace, value) SELECT namespace, value FROM bak.settings;
DELETE FROM triggers;
INSERT INTO triggers (id, type, owner_id, paused, next_run, hook_path, record)
SELECT id, type, owner_id, paused, next_run, hook_path, record FROM bak.triggers;
DELETE FROM trigger_windows;
INSERT INTO trigger_windows (trigger_id, fires_at, events)
SELECT trigger_id, fires_at, events FROM bak.trigger_windows;
INSERT INTO trigger_fires (trigger_id, due, job_id)
SELECT trigger_id, due, job_id FROM bak.trigger_fires b
WHERE NOT EXISTS (SELECT 1 FROM trigger_fires f WHERE f.trigger_id = b.trigger_id AND f.due = b.due);
DELETE FROM notifiers;
INSERT INTO notifiers (id, name, kind, recipients, url, secret, created, extra)
SELECT id, name, kind, recipients, url, secret, created, extra FROM bak.notifiers;
DELETE FROM commands;
INSERT INTO commands (name, record, runs, created)
SELECT name, record, runs, created FROM bak.commands;
INSERT INTO jobs (id, method, state, owner, owner_id, api_key_id, origin, lock_key, attempt,
                  run_after, node, description, time_started, time_finished, progress_percent, error,
                  retry_on_restart, record)
SELECT id, method, state, owner, owner_id, api_key_id, origin, lock_key, attempt,
       run_after, node, description, time_started, time_finished, progress_percent, error,
       retry_on_restart, record
FROM bak.jobs
WHERE state IN ('SUCCESS', 'FAILED', 'ABORTED') AND id NOT IN (SELECT id FROM jobs);
UPDATE counters SET value = (SELECT b.value FROM bak.counters b WHERE b.name = counters.name)
WHERE value < (SELECT b.value FROM bak.counters b WHERE b.name = counters.name);

-- name: finished_job_records
-- Backends without a dialect (memory) filter these in Python; SQL backends compile filters.
SELECT record, owner_id, api_key_id FROM jobs
WHERE state IN ('SUCCESS', 'FAILED', 'ABORTED') ORDER BY id;

-- name: all_triggers
SELECT id, type, owner_id, paused, next_run, hook_path, record FROM triggers ORDER BY id;

-- name: insert_trigger
INSERT INTO triggers (id, type, owner_id, paused, next_run, hook_path, record)
VALUES (:id, :type, :owner_id, :paused, :next_run, :hook_path, :record);

-- name: update_trigger
UPDATE triggers SET paused = :paused, next_run = :next_run, hook_path = :hook_path,
       owner_id = :owner_id, record = :record
WHERE id = :id;

-- name: delete_trigger
DELETE FROM triggers WHERE id = :id;

-- name: insert_trigger_fire
INSERT INTO trigger_fires (trigger_id, due, job_id) VALUES (:trigger_id, :due, :job_id);

-- name: last_trigger_fire
SELECT MAX(due) AS due FROM trigger_fires WHERE trigger_id = :trigger_id;

-- name: delete_trigger_fires
DELETE FROM trigger_fires WHERE trigger_id = :trigger_id;

-- name: prune_trigger_fires
-- Fires older than :before are only history (the jobs keep it): the newest per trigger stays.
DELETE FROM trigger_fires WHERE due < :before
AND due < (SELECT MAX(f.due) FROM trigger_fires f WHERE f.trigger_id = trigger_fires.trigger_id);

-- name: all_trigger_windows
SELECT trigger_id, fires_at, events FROM trigger_windows ORDER BY trigger_id;

-- name: open_trigger_window
INSERT INTO trigger_windows (trigger_id, fires_at, events) VALUES (:trigger_id, :fires_at, :events)
ON CONFLICT (trigger_id) DO UPDATE SET fires_at = excluded.fires_at, events = excluded.events;

-- name: close_trigger_window
DELETE FROM trigger_windows WHERE trigger_id = :trigger_id;

-- name: all_commands
SELECT name, record, runs, created FROM commands ORDER BY name;

-- name: get_command
SELECT name, record, runs, created FROM commands WHERE name = :name;

-- name: insert_command
INSERT INTO commands (name, record, runs, created) VALUES (:name, :record, :runs, :created);

-- name: update_command
UPDATE commands SET record = :record WHERE name = :name;

-- name: raise_command_runs
UPDATE commands SET runs = :runs WHERE name = :name AND runs < :runs;

-- name: delete_command
DELETE FROM commands WHERE name = :name;

-- name: command_runs
SELECT command, counter, job_id, status, state, started, finished FROM command_runs
WHERE command = :command ORDER BY counter DESC;

-- name: last_command_run
SELECT MAX(counter) AS counter FROM command_runs WHERE command = :command;

-- name: running_command_runs
SELECT command, counter, job_id, pgid, boot_id, pid_start FROM command_runs
WHERE status = 'running' ORDER BY command, counter;

-- name: insert_command_run
INSERT INTO command_runs (command, counter, job_id, status, state, started, finished, pgid,
                          boot_id, pid_start)
VALUES (:command, :counter, :job_id, 'running', NULL, :started, NULL, NULL, NULL, NULL);

-- name: set_command_run_process
UPDATE command_runs SET pgid = :pgid, boot_id = :boot_id, pid_start = :pid_start
WHERE command = :command AND counter = :counter;

-- name: end_command_run
UPDATE command_runs SET status = :status, state = :state, finished = :finished, pgid = NULL,
       boot_id = NULL, pid_start = NULL
WHERE command = :command AND counter = :counter;

-- name: delete_command_run
DELETE FROM command_runs WHERE command = :command AND counter = :counter;

-- name: delete_command_runs
DELETE FROM command_runs WHERE command = :command;
