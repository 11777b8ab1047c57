-- SCRAM-SHA-512 secrets of an API key (salt, iterations, StoredKey, ServerKey as JSON):
-- none of them logs a client in. NULL for keys made before: filled in at their next plain
-- login (the only moment the server sees such a key again).
ALTER TABLE api_keys ADD COLUMN scram TEXT;
