-- AgentKeys schema v2 (PostgreSQL): agents, their devices, scope and wraps, pairing and link codes,
-- the approval queue, code-lookup guards and rate-limit buckets. Keep in step with ../sqlite/0002_agents.sql.

-- Agent devices point at their agent; any device can be revoked without deleting its history.
ALTER TABLE devices ADD COLUMN agent_id TEXT;
ALTER TABLE devices ADD COLUMN revoked_at_ms BIGINT;
CREATE INDEX devices_by_agent ON devices (agent_id);

-- The id is derived from the account and the label, so it survives re-pairing.
-- status: pending (link not redeemed yet), active, revoked, torn_down.
CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    label         TEXT NOT NULL,
    tier          TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, label)
);

CREATE TABLE agent_aliases (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    alias      TEXT NOT NULL,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    PRIMARY KEY (account_id, alias)
);

CREATE TABLE agent_scope (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    service  TEXT NOT NULL,
    PRIMARY KEY (agent_id, service)
);

-- A credential version's data key, wrapped to one agent device.
CREATE TABLE credential_wraps (
    account_id TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    service    TEXT NOT NULL,
    version    BIGINT NOT NULL,
    device_id  TEXT NOT NULL,
    wrap       BYTEA NOT NULL,
    PRIMARY KEY (account_id, namespace, service, version, device_id)
);
CREATE INDEX credential_wraps_by_device ON credential_wraps (device_id);

-- Link codes: the server keeps the link key's public half and data keys wrapped to it.
CREATE TABLE links (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    agent_id       TEXT NOT NULL REFERENCES agents (id),
    sign_public    BYTEA NOT NULL,
    kx_public      BYTEA NOT NULL,
    certificate    BYTEA NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    redeemed_at_ms BIGINT
);

CREATE TABLE link_wraps (
    link_id   TEXT NOT NULL REFERENCES links (id),
    namespace TEXT NOT NULL,
    service   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    wrap      BYTEA NOT NULL,
    PRIMARY KEY (link_id, namespace, service)
);

-- The approval queue. A pairing has no account until a master looks its code up.
-- status: pending, approved, denied (expiry is computed from expires_at_ms).
CREATE TABLE requests (
    id                 TEXT PRIMARY KEY,
    code               TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL,
    account_id         TEXT,
    agent_id           TEXT,
    label              TEXT NOT NULL,
    scope              TEXT NOT NULL,
    tier               TEXT,
    reason             TEXT,
    device_sign_public BYTEA,
    device_kx_public   BYTEA,
    token_hash         BYTEA,
    poll_hash          BYTEA,
    commitment         BYTEA,
    reveal             BYTEA,
    status             TEXT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    expires_at_ms      BIGINT NOT NULL,
    decided_at_ms      BIGINT,
    device_id          TEXT,
    session_id         TEXT
);
CREATE INDEX requests_by_account ON requests (account_id, status);

-- Failed code look-ups per account: slowed, then locked (see server/src/requests.rs).
CREATE TABLE lookup_guards (
    account_id      TEXT PRIMARY KEY,
    failures        BIGINT NOT NULL,
    last_failure_ms BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL
);

-- Token buckets (milli-tokens), shared by every replica.
CREATE TABLE rate_buckets (
    bucket        TEXT PRIMARY KEY,
    tokens_milli  BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX audit_by_actor ON audit_log (actor, ts_ms);
