-- The master's signed decisions about who may receive keys (docs/protocol.md, "Account
-- statements"): one numbered log per account, each payload linked to the one before by its hash
-- and signed by the account key. The server keeps them in order; clients check and fold them.
CREATE TABLE account_statements (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    seq BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, seq)
);
