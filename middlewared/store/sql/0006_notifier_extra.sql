-- Notifiers: what a notifier keeps beside its columns, as a JSON object: the name of the
-- file that declares it (karajo's [notif], jobs.d), and its own SMTP server (karajo's
-- smtp_server, smtp_user, smtp_password, from, smtp_insecure; the password never shown).
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
ALTER TABLE notifiers ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
