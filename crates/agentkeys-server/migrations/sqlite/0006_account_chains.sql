-- One audit chain per account besides the server's (docs/protocol.md, "Account audit chains"):
-- each row of an account also carries its place in that account's chain and the chain's hash,
-- so a client can remember the head it saw and notice a shorter or rewritten history. Rows from
-- before this have no place (NULL): an account's chain starts at its first row after it.
ALTER TABLE audit_log ADD COLUMN account_seq INTEGER;
ALTER TABLE audit_log ADD COLUMN account_hash BLOB;
CREATE UNIQUE INDEX audit_account_chain ON audit_log (account_id, account_seq);

-- Each account's head: moved by the writer in the transaction that appends the account's rows.
CREATE TABLE account_audit_heads (
    account_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
