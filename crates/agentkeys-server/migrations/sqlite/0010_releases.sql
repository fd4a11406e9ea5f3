-- High-value releases (PRODUCT.md §3, per-use approval). Keep in step with ../postgres/0010_releases.sql.
-- A release request names the namespace of the credential it asks for.
ALTER TABLE requests ADD COLUMN namespace TEXT;

-- An approved release: the data key of one version wrapped to the one agent device that asked,
-- served for uses_left more reads (NULL: any number) until expires_at_ms, then deleted (by the
-- read that takes the last use, or by pruning once it expired). Not a credential_wraps row, so
-- nothing that pre-wraps or lists wraps ever sees it.
CREATE TABLE releases (
    request_id       TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    agent_id         TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    service          TEXT NOT NULL,
    version          INTEGER NOT NULL,
    wrap             BLOB NOT NULL,
    grant_recipient  TEXT NOT NULL,
    grant_signer     TEXT NOT NULL,
    grant_signature  BLOB NOT NULL,
    uses_left        INTEGER,
    expires_at_ms    INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL
);
CREATE INDEX releases_by_reader ON releases (device_id, service);
CREATE INDEX releases_by_agent ON releases (agent_id);
CREATE INDEX releases_by_expiry ON releases (expires_at_ms);
