-- How the human showed presence for a critical master operation (PRODUCT.md §5): fprintd,
-- polkit, touchid, windows-hello, prompt or skipped; NULL for everything else. Covered by the
-- row hash only when set, so rows written before this column keep their hashes.
ALTER TABLE audit_log ADD COLUMN presence TEXT;

-- An account that sets this (1) has critical operations refused when presence was skipped or
-- not reported (`agentkeys config set require-presence on`).
ALTER TABLE accounts ADD COLUMN require_presence_for_critical BIGINT NOT NULL DEFAULT 0;
