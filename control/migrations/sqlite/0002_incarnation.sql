-- Environment incarnations (keep in step with ../postgres/0002_incarnation.sql).
--
-- An environment's incarnation is a random 128-bit id (32 hex digits) that changes when the
-- environment is created again under the same key, or rotated by an operator after a restore: a
-- revision number means something only together with it. Tokens limited to environments record
-- the incarnation of each when they are created, and stop applying to an environment whose
-- incarnation changed.

ALTER TABLE environments ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
UPDATE environments SET incarnation = lower(hex(randomblob(16)));

-- {"<environment key>": "<incarnation>"} of a token's environments (filled for existing tokens
-- when the store opens).
ALTER TABLE tokens ADD COLUMN incarnations TEXT NOT NULL DEFAULT '{}';
