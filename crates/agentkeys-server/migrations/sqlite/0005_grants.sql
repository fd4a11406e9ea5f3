-- Signed versions (docs/protocol.md, "Grants"): every wrap of a data key carries its writer's
-- signature over what it grants, so a reader can tell a version the account wrote from one the
-- server made up. NULL grant columns are versions stored before this (first wave): readers refuse
-- them until the master stores them again, signed.

-- The version's flags (bit 0: high value), signed into every grant of the version.
ALTER TABLE credential_versions ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;
-- The grant of the account-key wrap: the master device that signed it, and its signature.
ALTER TABLE credential_versions ADD COLUMN grant_signer TEXT;
ALTER TABLE credential_versions ADD COLUMN grant_signature BLOB;

-- A device wrap's grant. `grant_recipient` is whom the writer granted it to: the device itself,
-- or the link code the device redeemed (the daemon re-wrapped the link's key to its own).
ALTER TABLE credential_wraps ADD COLUMN grant_recipient TEXT;
ALTER TABLE credential_wraps ADD COLUMN grant_signer TEXT;
ALTER TABLE credential_wraps ADD COLUMN grant_signature BLOB;

ALTER TABLE link_wraps ADD COLUMN grant_recipient TEXT;
ALTER TABLE link_wraps ADD COLUMN grant_signer TEXT;
ALTER TABLE link_wraps ADD COLUMN grant_signature BLOB;

-- The link key's signature over the account's signing key (`agent create`): the daemon that
-- holds the code checks it, so the server cannot stand in an account key of its own.
ALTER TABLE links ADD COLUMN account_binding BLOB;
