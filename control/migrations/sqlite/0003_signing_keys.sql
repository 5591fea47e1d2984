-- Keys for signing decisions (keep in step with the other backend's 0003_signing_keys.sql).
--
-- Each environment holds the HMAC-SHA256 keys its sidecars sign their `vexil-flags` with
-- (`vexil-signature`), as JSON text: `[{"id": "<8 hex>", "secret": "<64 hex>", "created_at": <ms>}]`,
-- newest first, at most two (the current key and the one before it, still accepted). A new
-- environment gets its first key when it is created; environments older than this migration get
-- theirs when the store opens (a key rotation, so their sidecars receive it).
ALTER TABLE environments ADD COLUMN signing_keys TEXT NOT NULL DEFAULT '[]';
