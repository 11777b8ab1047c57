-- A user's own mail address (mail.send's noreply mode writes to it); '' when none.
ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT '';
