-- The audit entry of each change (keep in step with ../postgres/0005_change_audit.sql): who made
-- it, when, and the set before and after, for the change stream
-- (GET /api/v1/environments/{env}/events), which reads the change log and names each change's
-- actor on every replica. NULL for changes written before this migration, or whose audit entry
-- retention has pruned since (the stream then names no actor).
ALTER TABLE changes ADD COLUMN audit_id BIGINT;
