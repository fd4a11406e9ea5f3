-- AgentKeys schema v1 (PostgreSQL). Keep in step with ../sqlite/0001_initial.sql.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    sign_public   BYTEA NOT NULL,
    kx_public     BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    kind          TEXT NOT NULL,
    label         TEXT NOT NULL,
    sign_public   BYTEA NOT NULL,
    kx_public     BYTEA NOT NULL,
    certificate   BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE account_key_wraps (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    recipient  TEXT NOT NULL,
    wrap       BYTEA NOT NULL,
    PRIMARY KEY (account_id, recipient)
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    device_id     TEXT NOT NULL REFERENCES devices (id),
    token_hash    BYTEA NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

CREATE TABLE credential_versions (
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    namespace     TEXT NOT NULL,
    service       TEXT NOT NULL,
    version       BIGINT NOT NULL,
    ciphertext    BYTEA,
    data_key_wrap BYTEA,
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (account_id, namespace, service, version)
);

CREATE TABLE nonces (
    session_id    TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (session_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (expires_at_ms);

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    ts_ms      BIGINT NOT NULL,
    account_id TEXT,
    actor      TEXT,
    session_id TEXT,
    action     TEXT NOT NULL,
    namespace  TEXT,
    service    TEXT,
    outcome    TEXT NOT NULL,
    code       TEXT,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
CREATE INDEX audit_by_account ON audit_log (account_id, ts_ms);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
