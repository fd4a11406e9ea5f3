-- Presence keys (PRODUCT.md §2, K11): the master's WebAuthn credentials, and the ceremonies that
-- enroll them and that bind one assertion to one critical request (docs/protocol.md, "Presence
-- ceremonies"). Once an account has a key, the server refuses its critical operations without a
-- completed ceremony of that account bound to the exact request.
CREATE TABLE presence_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    credential_id BLOB NOT NULL,
    public_key BLOB NOT NULL,
    sign_count INTEGER NOT NULL,
    aaguid BLOB NOT NULL,
    attestation_format TEXT NOT NULL,
    attestation_trust TEXT NOT NULL,
    attestation_subject TEXT,
    created_at_ms INTEGER NOT NULL,
    last_used_at_ms INTEGER,
    UNIQUE (account_id, name)
);
CREATE INDEX presence_keys_account ON presence_keys (account_id);

CREATE TABLE presence_ceremonies (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    -- The master device that asked for it: the audit's actor for what the page does.
    device_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    code TEXT NOT NULL,
    challenge BLOB NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body_digest BLOB NOT NULL,
    operation TEXT NOT NULL,
    -- What an enrollment enrolls: the name and kind the master asked for.
    key_name TEXT,
    key_kind TEXT,
    -- The key that answered an assertion, or the one an enrollment made.
    key_id TEXT,
    reason TEXT,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    completed_at_ms INTEGER
);
CREATE INDEX presence_ceremonies_expiry ON presence_ceremonies (expires_at_ms);

-- The attestation roots an account restricts enrollment to (`config set presence-attestation`).
CREATE TABLE presence_attestation_roots (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    fingerprint BLOB NOT NULL,
    certificate BLOB NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (account_id, fingerprint)
);
