-- Reporter API keys (only their SHA-256 is stored), and the registry index the
-- reporter uses to check which company owns a project.

-- One row per key ever issued; a key is never deleted, only revoked, so listings
-- keep the history. key_hash is the lowercase hex SHA-256 of the whole key; prefix
-- is its first characters, shown in listings to tell keys apart.
CREATE TABLE analytics.api_keys (
    id          bigserial PRIMARY KEY,
    key_hash    text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    prefix      text NOT NULL,
    company_id  bigint,
    is_admin    boolean NOT NULL,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    -- An admin key sees every company; any other key is bound to exactly one.
    CONSTRAINT api_keys_scope_check CHECK (is_admin = (company_id IS NULL))
);

-- A company key may read a project only if every content of that project is its own.
CREATE INDEX ar_content_project_idx ON analytics.ar_content (project_id, company_id);
