-- Credentials: who may log in. user_id is shared with the user service's
-- profile; email is stored normalised (trimmed, lowercase).
CREATE TABLE credentials (
    user_id       TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL
);

-- Token signing keys. A key is published in the JWKS from created_at,
-- signs from active_from (the newest active key signs), and leaves the
-- JWKS after retire_after (NULL while it is the current key), when the
-- last token it signed has expired.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    private_key  TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    active_from  TIMESTAMP NOT NULL,
    retire_after TIMESTAMP
);
