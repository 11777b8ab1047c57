-- A user's two-factor secret (TOTP: secret, interval, digits, last time step used) as JSON;
-- NULL when the user has none.
ALTER TABLE users ADD COLUMN twofactor TEXT;
