-- AgentKeys schema v1 (SQLite). Keep in step with ../postgres/0001_initial.sql.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    sign_public   BLOB NOT NULL,
    kx_public     BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    kind          TEXT NOT NULL,
    label         TEXT NOT NULL,
    sign_public   BLOB NOT NULL,
    kx_public     BLOB NOT NULL,
    certificate   BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- The account private key, wrapped to each master device and to the recovery key.
CREATE TABLE account_key_wraps (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    recipient  TEXT NOT NULL,
    wrap       BLOB NOT NULL,
    PRIMARY KEY (account_id, recipient)
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    device_id     TEXT NOT NULL REFERENCES devices (id),
    token_hash    BLOB NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

-- Every version ever stored; a NULL ciphertext is a removal. The newest version is current.
CREATE TABLE credential_versions (
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    namespace     TEXT NOT NULL,
    service       TEXT NOT NULL,
    version       INTEGER NOT NULL,
    ciphertext    BLOB,
    data_key_wrap BLOB,
    created_at_ms INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (account_id, namespace, service, version)
);

-- Seen request nonces, shared by every replica; the primary key is the replay check.
CREATE TABLE nonces (
    session_id    TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (session_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (expires_at_ms);

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    ts_ms      INTEGER NOT NULL,
    account_id TEXT,
    actor      TEXT,
    session_id TEXT,
    action     TEXT NOT NULL,
    namespace  TEXT,
    service    TEXT,
    outcome    TEXT NOT NULL,
    code       TEXT,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_by_account ON audit_log (account_id, ts_ms);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- The chain head: one row, locked by every append so replicas extend one chain.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
