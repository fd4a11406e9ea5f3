-- The account's policy (PRODUCT.md §3 "policy"). Keep in step with ../sqlite/0011_policies.sql.
-- Every version is kept (`policy show --version N`, `policy explain`); the newest is in force.
CREATE TABLE policies (
    account_id     TEXT NOT NULL,
    version        BIGINT NOT NULL,
    text           TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    PRIMARY KEY (account_id, version)
);

-- The rule that decided a request (`v3:no-prod-at-night`), covered by the row's hash when set.
ALTER TABLE audit_log ADD COLUMN policy_rule TEXT;
