-- Master devices and recovery (PRODUCT.md §3). Keep in step with ../postgres/0009_master_devices.sql.
-- How a master device joined: init, join (approved by another master device) or recovery. Agent
-- devices leave it NULL; an unknown value is an error when read.
ALTER TABLE devices ADD COLUMN origin TEXT;
UPDATE devices SET origin = 'init' WHERE kind = 'master';

-- The recovery key's signing key (docs/protocol.md "Recovery key"): how a recovery finds its
-- account and proves it holds the key. NULL for an account whose key predates it, until rotated.
ALTER TABLE accounts ADD COLUMN recovery_sign_public BLOB;
CREATE UNIQUE INDEX accounts_by_recovery_key ON accounts (recovery_sign_public);
ALTER TABLE accounts ADD COLUMN recovery_delay_ms INTEGER NOT NULL DEFAULT 259200000;

-- An account recovery is held until then.
ALTER TABLE requests ADD COLUMN not_before_ms INTEGER;
